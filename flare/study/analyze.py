"""`flare analyze`: which layers align each language with English, and whether an adapter changes it.

Per target language and model, on held-out parallel pairs (the task's test split, or another, with
the study's English side), per layer: the mean cosine similarity of mean-pooled target and English
sentence vectors and the MEXA-style nearest-neighbour retrieval accuracy in both directions
(flare/hf/alignment.py). The models (flare/hf/representations.py says how each reads the pairs):
* base: the stage-1 model (or, in a folder without one, the study's `model`);
* lora: the stage-1 model with the study's saved translate-train (LoRA) adapter;
* flare: the stage-1 model with the study's saved FLARE adapter, read through its fused path.
Nothing is trained. Each (model, language) result is saved on its own, atomically, under
<output_dir>/analysis/parts/, so a rerun (after an interruption, or with more languages) computes
only what is missing; the tables and figures (analysis_report.py) are written from the parts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flare import extras
from flare.adapter import load_flare_model
from flare.adapter.io import check_adapter_dir
from flare.data.examples import Pair
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.files import write_atomically
from flare.hf.alignment import layer_alignment
from flare.hf.formats import FormatSettings, PairFormatter
from flare.hf.loading import load_backbone
from flare.hf.representations import layer_representations
from flare.study.analysis_report import flare_margins, write_analysis
from flare.study.folder import stage1_done, stage1_source
from flare.study.runs import Run
from flare.study.settings import Study

ModelName = Literal["base", "lora", "flare"]
MODEL_NAMES: tuple[str, ...] = ("base", "lora", "flare")
PARTS = Path("analysis") / "parts"


@dataclass(frozen=True)
class AnalysisModel:
    """One model of the analysis: its name, the adapter folder it reads (None: the base model) and
    how it reads a pair."""

    name: str
    adapter: Path | None
    reading: Literal["plain", "fused"]


def analysis_models(study: Study, models: list[str], fusion: str, seed: int, language: str) -> list[AnalysisModel]:
    """The models of one language, with the adapter folders of the study's runs."""
    out = Path(study.output_dir)
    chosen = []
    for name in models:
        if name == "base":
            chosen.append(AnalysisModel("base", None, "plain"))
        elif name == "lora":
            folder = Run("translate-train", None, language, seed).folder(out) / "adapter"
            chosen.append(AnalysisModel("lora", folder, "plain"))
        else:
            folder = Run("flare", fusion, language, seed, "gold", "gold").folder(out) / "adapter"
            chosen.append(AnalysisModel("flare", folder, "fused"))
    return chosen


def _pairs(study: Study, task, split: str, language: str, max_pairs: int) -> list[Pair]:
    data = study.data
    pairs = task.load_pairs(split, language, data.data_dir, data.translations_dir, data.source)
    return pairs[:max_pairs] if max_pairs else pairs


def _part_path(out: Path, model: str, language: str) -> Path:
    return out / PARTS / model / f"{language}.json"


def analyze(study: Study, models: list[str] | None = None, split: str = "test", min_pairs: int = 100,
            max_pairs: int = 0, fusion: str | None = None, seed: int | None = None,
            cross_language: bool = True, results: str | None = None) -> dict[str, Path]:
    """Measure, save and report the alignment of every (model, language); returns the written paths.
    `results`: the results.jsonl whose FLARE and LoRA scores the cross-language plot reads (default:
    the study folder's)."""
    study = study.validate()
    task = get_task(study.task)
    models = list(dict.fromkeys(models or MODEL_NAMES))
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise FlareError(f"analyze: unknown model {unknown[0]!r}; choose from {', '.join(MODEL_NAMES)}")
    if min_pairs < 2:
        raise FlareError(f"analyze: min_pairs must be at least 2 (retrieval needs candidates), got {min_pairs}")
    fusion = fusion or study.fusions[0]
    seed = study.seeds[0] if seed is None else seed
    out = Path(study.output_dir)
    languages = [lang for lang in study.languages if lang != task.source_language]
    for language in languages:
        task.check_language(language)
    adapted = [m for m in models if m != "base"]
    if adapted and not stage1_done(study):
        raise FlareError(f"analyze: {out} holds no stage-1 model; the {' and '.join(adapted)} models need the "
                         "study's saved adapters (run `flare compare` first, or analyse --models [base])")
    margins: dict[str, float] = {}
    if cross_language:
        if len(languages) < 2:
            raise FlareError(f"analyze: the cross-language plot needs at least 2 target languages, got "
                             f"{len(languages)}; add languages or pass --cross_language false")
        if "base" not in models:
            raise FlareError("analyze: the cross-language plot reads the base model's alignment; add base to --models")
        extras.check("scipy")
        results = str(Path(results) if results else out / "results.jsonl")
        margins = flare_margins(Path(results), task.name, languages, fusion)  # refuses missing records
    plan: list[tuple[str, AnalysisModel]] = []
    for language in languages:
        for model in analysis_models(study, models, fusion, seed, language):
            if model.adapter is not None:
                try:
                    check_adapter_dir(model.adapter)
                except FlareError as error:
                    raise FlareError(f"analyze: the {model.name} model of {language} needs its saved adapter: "
                                     f"{error}") from None
            plan.append((language, model))
    pairs = {}
    for language in languages:  # the data are read (and counted) before any model loads
        pairs[language] = _pairs(study, task, split, language, max_pairs)
        if len(pairs[language]) < min_pairs:
            raise FlareError(f"analyze: {language} has {len(pairs[language])} parallel pairs in split {split!r}, "
                             f"fewer than min_pairs {min_pairs}")
    settings = {"task": task.name, "split": split, "source": study.data.source, "max_pairs": max_pairs,
                "max_length": study.data.max_length, "seed": seed, "fusion": fusion}
    placement = study.placement()
    base_source = stage1_source(study) if stage1_done(study) else study.model
    todo = [(lang, m) for lang, m in plan if _stale(_part_path(out, m.name, lang), settings, m, base_source)]
    print(f"analyze: {len(plan) - len(todo)} (model, language) results already saved, {len(todo)} to go", flush=True)
    for number, (language, model) in enumerate(todo, 1):
        print(f"[{number}/{len(todo)}] {model.name} {language}", flush=True)
        backbone, tokenizer, family = load_backbone(base_source, task, placement=placement, family=study.family)
        network = backbone if model.adapter is None else load_flare_model(backbone, model.adapter)
        formatter = PairFormatter(task, tokenizer, family, "flare", FormatSettings(max_length=study.data.max_length))
        target, english = layer_representations(network, formatter, pairs[language], model.reading,
                                                 study.stage2.eval_batch_size, f"{model.name} {language}")
        record = {"model": model.name, "language": language, "n_pairs": len(pairs[language]),
                  "base_model": str(base_source), "adapter": None if model.adapter is None else str(model.adapter),
                  "reading": model.reading, "settings": settings, "layers": layer_alignment(target, english)}
        write_atomically(_part_path(out, model.name, language), json.dumps(record, indent=1))
        del network, backbone
    records = [_read_part(_part_path(out, m.name, lang)) for lang, m in plan]
    return write_analysis(records, out / "analysis", margins if cross_language else None, results)


def _read_part(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _stale(path: Path, settings: dict[str, Any], model: AnalysisModel, base_source: str) -> bool:
    """Whether a (model, language) result must be (re)computed: none saved, or saved with other
    settings, another base model or another adapter."""
    if not path.is_file():
        return True
    try:
        saved = _read_part(path)
    except (OSError, ValueError):
        return True
    adapter = None if model.adapter is None else str(model.adapter)
    return (saved.get("settings") != settings or saved.get("base_model") != str(base_source)
            or saved.get("adapter") != adapter)
