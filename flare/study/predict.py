"""Labelling new target-language inputs with a trained run of a study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flare.adapter import EnglishStateCache, load_flare_model
from flare.adapter.io import check_adapter_dir
from flare.data.examples import Example, Pair, require_text, visible
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.hf.device import resolve_placement
from flare.hf.formats import FormatSettings, PairFormatter
from flare.hf.loading import load_backbone
from flare.hf.scoring import predict_items
from flare.mt.translate import translate_columns
from flare.study.folder import folder_variant, stage1_dir, stage1_done, stage1_source
from flare.study.methods import METHODS
from flare.study.runs import Run
from flare.study.settings import Study


def _example(task, text: str, language: str, number: int) -> Example:
    """One input: a single text, or the task's fields separated by tabs (premise<TAB>hypothesis)."""
    fields = task.encoder_fields if task.type == "classification" else ["question", "context"]
    parts = text.split("\t")
    if len(parts) != len(fields):
        raise FlareError(
            f"input {number}: expected {len(fields)} tab-separated field(s) ({', '.join(fields)}), got {len(parts)}"
        )
    return Example(
        id=str(number), language=language,
        fields={f: require_text(p, f"input {number}", f) for f, p in zip(fields, parts)},
    )


def _machine_english(study: Study, texts: list[str], language: str, source_language: str) -> list[str]:
    """The inputs translated into English on the fly with study.mt_model (cached like `flare
    translate`); tab-separated fields are translated one by one."""
    columns = list(zip(*(t.split("\t") for t in texts)))
    translated = translate_columns(
        columns, src_lang=language, tgt_lang=source_language, mt_model=study.mt_model,
        cache_dir=Path(study.output_dir) / "translations", device=study.device, dtype=study.dtype,
        language_map=study.language_map,
    )
    rows = list(zip(*translated))
    for number, fields in enumerate(rows):
        if not all(visible(f) for f in fields):
            raise FlareError(
                f"predict: {study.mt_model} translated input {number} to empty text; pass --english instead"
            )
    return ["\t".join(fields) for fields in rows]


def predict_texts(study: Study, language: str, texts: list[str], english: list[str] | None, method: str = "flare",
                  fusion: str = "add_relu", seed: int = 1, details: list[dict[str, Any]] | None = None) -> list[str]:
    """Predicted labels (classification) or answers (QA) for the texts, in order. The English side
    (flare, input-fusion, translate-test) is `english` when given, else translated on the fly
    with study.mt_model; flare-mt feeds study.mt_model's encoder states instead. A `details` list
    receives one record per input: id, text, label and class probabilities (or the answer)."""
    task = get_task(study.task)
    task.check_language(language)
    placement = resolve_placement(study.device, study.dtype, study.load_in_4bit)
    if method not in METHODS:
        raise FlareError(f"predict: unknown method {method!r}; choose from {', '.join(METHODS)}")
    view, trains = METHODS[method].view, METHODS[method].trains
    out = Path(study.output_dir)
    if not stage1_done(study):
        raise FlareError(
            f"predict: no stage-1 model in {stage1_dir(out)}; run `flare compare` or `flare train` first"
        )
    if english is not None and len(english) != len(texts):
        raise FlareError(f"predict: {len(texts)} inputs but {len(english)} English translations")
    targets = [_example(task, t, language, i) for i, t in enumerate(texts)]  # bad inputs fail before any loading
    needs_english = METHODS[method].english_at_test
    if needs_english and english is None:
        if not study.mt_model:
            raise FlareError(
                f"predict: {method} needs the English side: pass --english, or set mt_model to translate on the fly"
            )
        english = _machine_english(study, texts, language, task.source_language)
    if METHODS[method].mt_states and not study.mt_model:
        raise FlareError("predict: flare-mt needs mt_model (its encoder states feed the adapter)")
    run = Run(method, fusion if METHODS[method].fused else None, language, seed,
              variant=folder_variant(study))
    adapter = run.folder(out) / "adapter"
    if trains:
        check_adapter_dir(adapter)  # a missing, pickled or truncated adapter fails before the base loads
    backbone, tokenizer, family = load_backbone(stage1_source(study), task, placement=placement, family=study.family)
    model = backbone
    if trains:
        try:
            model = load_flare_model(backbone, adapter)
        except TypeError as error:  # PEFT builds its LoraConfig from adapter_config.json unchecked
            raise FlareError(
                f"{adapter / 'adapter_config.json'}: a setting has the wrong type ({str(error)[:200]})"
            ) from None
    items = targets
    if needs_english:
        items = [
            Pair(_example(task, e, task.source_language, i), t, "given")
            for i, (e, t) in enumerate(zip(english, targets))
        ]
    extra = None
    if METHODS[method].mt_states:
        from flare.mt.encoder import MTEncoder

        encoder = MTEncoder(study.mt_model, max_length=study.data.max_length, device=study.device, dtype=study.dtype,
                            language_map=study.language_map)

        def extra(chunk):
            states, mask = encoder.encode([" ".join(ex.fields.values()) for ex in chunk], language)
            return {"source_states": states, "source_attention_mask": mask}

    formatter = PairFormatter(task, tokenizer, family, view, FormatSettings(max_length=study.data.max_length))
    if trains and view == "flare":
        # the English pass in the layout the study scored with (flare/adapter/english_cache.py), so a
        # text gets the probabilities its run gave it; each text is seen once, so nothing is kept
        model.english_state_cache = EnglishStateCache(formatter.max_length, study.stage2.batch_size, 0, memoize=False)
    distributions: dict[str, list[float]] = {}
    predictions = predict_items(model, formatter, items, study.stage2.eval_batch_size, extra, progress=False,
                                probabilities=distributions)
    ids = [str(i) for i in range(len(texts))]
    if details is not None:
        for number, i in enumerate(ids):
            row: dict[str, Any] = {"id": number, "text": texts[number]}
            if task.type == "classification":
                row["label"] = task.labels[predictions[i]]
                row["probabilities"] = {label: round(p, 6) for label, p in zip(task.labels, distributions[i])}
            else:
                row["answer"] = predictions[i]
            details.append(row)
    if task.type == "classification":
        return [task.labels[predictions[i]] for i in ids]
    return [predictions[i] for i in ids]
