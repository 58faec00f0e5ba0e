"""Labelling new target-language inputs with a trained run of a study."""

from __future__ import annotations

from pathlib import Path

from flare.adapter import load_flare_model
from flare.data import Example, Pair
from flare.errors import FlareError
from flare.evaluate import predict
from flare.formats import FormatSettings, PairFormatter
from flare.modeling import load_backbone
from flare.pipeline import VIEWS, Run
from flare.settings import Study
from flare.tasks import get_task


def _example(task, text: str, language: str, number: int) -> Example:
    """One input: a single text, or the task's fields separated by tabs (premise<TAB>hypothesis)."""
    fields = task.encoder_fields if task.type == "classification" else ["question", "context"]
    parts = text.split("\t")
    if len(parts) != len(fields):
        raise FlareError(f"input {number}: expected {len(fields)} tab-separated field(s) ({', '.join(fields)}), got {len(parts)}")
    return Example(id=str(number), language=language, fields=dict(zip(fields, parts)))


def predict_texts(study: Study, language: str, texts: list[str], english: list[str] | None, method: str = "flare",
                  fusion: str = "add_relu", seed: int = 1) -> list[str]:
    """Predicted labels (classification) or answers (QA) for the texts, in order."""
    task = get_task(study.task)
    task.check_language(language)
    if method == "flare-mt":
        raise FlareError("predict: flare-mt inputs come from the MT encoder; use the Python API (flare.mt_encoder) for now")
    if method == "flare" and english is None:
        raise FlareError("predict: flare needs the English translation of each input (--english)")
    if english is not None and len(english) != len(texts):
        raise FlareError(f"predict: {len(texts)} inputs but {len(english)} English translations")
    out = Path(study.output_dir)
    stage1 = out / "stage1" / "model"
    if not (stage1 / "config.json").is_file():
        raise FlareError(f"predict: no stage-1 model in {stage1}; run `flare compare` or `flare train` first")
    run = Run(method, fusion if method in ("flare", "flare-mt") else None, language, seed)
    backbone, tokenizer, family = load_backbone(str(stage1), task, study.load_in_4bit)
    model = backbone
    if method not in ("zero-shot", "translate-test"):
        adapter = out / "runs" / run.name / language / f"seed{seed}" / "adapter"
        model = load_flare_model(backbone, adapter)
    targets = [_example(task, t, language, i) for i, t in enumerate(texts)]
    items = targets
    if english is not None:
        items = [Pair(_example(task, e, task.source_language, i), t, "given") for i, (e, t) in enumerate(zip(english, targets))]
    view = VIEWS[method]
    if view in ("flare", "input_fusion", "source") and english is None:
        raise FlareError(f"predict: {method} needs the English translation of each input (--english)")
    formatter = PairFormatter(task, tokenizer, family, view, FormatSettings(max_length=study.data.max_length))
    predictions = predict(model, formatter, items, study.stage2.eval_batch_size, progress=False)
    ids = [str(i) for i in range(len(texts))]
    if task.type == "classification":
        return [task.labels[predictions[i]] for i in ids]
    return [predictions[i] for i in ids]
