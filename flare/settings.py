"""Typed settings of a study, loadable from YAML and overridable from the command line.

A study is one task and one model: stage 1 fine-tunes on English, then every method adapts to
every target language for every seed. Every field is documented here; `flare compare --help`
prints the same text.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flare.adapter.config import FUSIONS
from flare.errors import FlareError

METHODS = ("zero-shot", "translate-test", "translate-train", "input-fusion", "flare", "flare-mt")


@dataclass
class StageSettings:
    """How one training stage runs.

    Args:
        learning_rate: peak AdamW learning rate (LoRA wants about 1e-4 to 1e-3; 2e-5 barely moves).
        epochs: passes over the training data.
        batch_size: examples per optimizer step (per process).
        eval_batch_size: examples per evaluation batch.
        gradient_accumulation: batches summed into one optimizer step.
        warmup_ratio: share of the steps with linearly rising learning rate; then linear decay.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping norm (0 disables clipping).
        gradient_checkpointing: recompute activations in backward to save memory.
        mixed_precision: "no", "bf16" or "fp16" (GPU only).
        select_best: keep the epoch with the best validation score (else the last epoch).
        tensorboard: also log loss, learning rate and validation score for TensorBoard.
        wandb_project: also log to this Weights & Biases project (needs `pip install wandb`).
    """

    learning_rate: float = 5e-4
    epochs: int = 4
    batch_size: int = 16
    eval_batch_size: int = 32
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    select_best: bool = True
    tensorboard: bool = True
    wandb_project: str | None = None


@dataclass
class DataSettings:
    """Which examples each stage sees.

    Args:
        data_dir: dataset folder (default: the FLARE_DATA_DIR environment variable).
        translations_dir: folder of translation files from `flare translate` (machine pairs).
        source: where the English side comes from: "gold" (human parallel data), "machine"
            (translation files) or "auto" (gold when the task has it).
        train_split: split for training (stage 1 in English, stage 2 in the target language).
        valid_split: split for model selection; empty: hold out `valid_size` training rows.
        test_split: split scored per target language.
        valid_size: rows taken from the end of the training split when valid_split is empty.
        max_train: keep at most this many training rows (0: all).
        max_valid: keep at most this many validation rows (0: all).
        max_test: keep at most this many test rows (0: all).
        max_length: tokens per side (input-level fusion gets twice this).
    """

    data_dir: str | None = None
    translations_dir: str | None = None
    source: str = "auto"
    train_split: str = "train"
    valid_split: str = "valid"
    test_split: str = "test"
    valid_size: int = 0
    max_train: int = 0
    max_valid: int = 0
    max_test: int = 0
    max_length: int = 128


@dataclass
class AdapterSettings:
    """The LoRA / FLARE adapter of both stages.

    Args:
        r: LoRA rank.
        lora_alpha: LoRA scaling numerator (scale = lora_alpha / r).
        lora_dropout: dropout on the adapter input.
        target_modules: module names that get LoRA, or "all-linear"; empty: the query/value projections.
        source_position: "module_input" (what the fused linear sees) or "layer_input" (the reference code's
            residual stream).
        decode_fusion: what generated tokens fuse: "none" or "last".
        cross_attention_heads: heads of the cross_attention fusion.
    """

    r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    source_position: str = "module_input"
    decode_fusion: str = "none"
    cross_attention_heads: int = 1


@dataclass
class Study:
    """A comparison of methods on one task and model.

    Args:
        task: built-in task (xnli, nusax, tydiqa) or a custom task YAML file.
        model: model id, local path or alias (e.g. multilingual-e5-small, resolved offline).
        languages: target languages (project codes of the task, e.g. jav, sun).
        methods: any of zero-shot, translate-test, translate-train, input-fusion, flare, flare-mt.
        fusions: fusion functions tried for the flare and flare-mt methods.
        seeds: seeds of stage 2 (stage 1 uses the first).
        output_dir: where checkpoints, logs and results go.
        mt_model: NLLB/M2M100 model whose encoder feeds flare-mt.
        load_in_4bit: load the base in 4-bit NF4 (bitsandbytes; stage 1 is then merged into a
            de-quantised copy, see README).
        device: "auto" (CUDA when present), "cpu" or "cuda".
        data: which examples each stage sees.
        adapter: the LoRA / FLARE adapter.
        stage1: English task fine-tuning.
        stage2: cross-lingual adaptation.
    """

    task: str = "nusax"
    model: str = "multilingual-e5-small"
    languages: list[str] = field(default_factory=lambda: ["jav"])
    methods: list[str] = field(default_factory=lambda: ["zero-shot", "translate-train", "flare"])
    fusions: list[str] = field(default_factory=lambda: ["add_relu"])
    seeds: list[int] = field(default_factory=lambda: [1])
    output_dir: str = "runs/study"
    mt_model: str | None = None
    load_in_4bit: bool = False
    device: str = "auto"
    data: DataSettings = field(default_factory=DataSettings)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    stage1: StageSettings = field(default_factory=StageSettings)
    stage2: StageSettings = field(default_factory=StageSettings)

    def validate(self) -> Study:
        """Fail before any work starts, with one line naming the field."""
        from flare.tasks import get_task

        task = get_task(self.task)
        for language in self.languages:
            task.check_language(language)
            if language == task.source_language:
                raise FlareError(f"languages: {language} is the source language of {task.name}, not a target")
        if not self.languages:
            raise FlareError("languages: give at least one target language")
        for method in self.methods:
            if method not in METHODS:
                raise FlareError(f"methods: unknown method {method!r}; choose from {', '.join(METHODS)}")
        for fusion in self.fusions:
            if fusion not in FUSIONS:
                raise FlareError(f"fusions: unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}")
        if "flare-mt" in self.methods and not self.mt_model:
            raise FlareError("mt_model: the flare-mt method needs an NLLB/M2M100 model")
        if not self.seeds:
            raise FlareError("seeds: give at least one seed")
        if self.data.source not in ("gold", "machine", "auto"):
            raise FlareError(f"data.source: {self.data.source!r} is not gold, machine or auto")
        for name in ("stage1", "stage2"):
            stage = getattr(self, name)
            if stage.mixed_precision not in ("no", "bf16", "fp16"):
                raise FlareError(f"{name}.mixed_precision: {stage.mixed_precision!r} is not no, bf16 or fp16")
            if stage.learning_rate <= 0 or stage.epochs < 1 or stage.batch_size < 1:
                raise FlareError(f"{name}: learning_rate, epochs and batch_size must be positive")
        local = Path(self.model)
        looks_local = self.model.startswith((".", "/", "~")) or local.exists()
        if looks_local and not (local.expanduser() / "config.json").is_file():
            raise FlareError(f"model: {self.model} is not a model directory (no config.json)")
        return self


def from_dict(cls: type, values: Any, where: str = "") -> Any:
    """Build a (nested) settings dataclass from plain data, rejecting unknown or mistyped keys."""
    if not isinstance(values, dict):
        raise FlareError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise FlareError(
            f"{where + '.' if where else ''}{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})"
        )
    built = {}
    for key, value in values.items():
        name = f"{where}.{key}" if where else key
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            built[key] = from_dict(hint, value, name)
        else:
            built[key] = _check_type(value, hint, name)
    return cls(**built)


def _check_type(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        base = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return value
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is list and isinstance(value, list):
            item = (typing.get_args(option) or (object,))[0]
            return [_check_type(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
        if (
            base is not list and base is not type(None) and isinstance(value, base)
            and not (base is int and isinstance(value, bool))
        ):
            return value
    raise FlareError(f"{name}: {value!r} is not a valid {getattr(hint, '__name__', str(hint))}")


def read_study_yaml(path: str | Path) -> dict[str, Any]:
    """The settings mapping of a study YAML: UTF-8, the safe loader (no Python objects), a mapping.
    Every problem is one FlareError line naming the file (and line)."""
    from flare.files import read_text

    if not Path(path).is_file():
        raise FlareError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise FlareError(
            f"{path}:{where} is not valid YAML ({getattr(error, 'problem', None) or type(error).__name__})"
        ) from None
    if not isinstance(values, (dict, type(None))):
        raise FlareError(f"{path}: a study file must be a YAML mapping of settings, got {type(values).__name__}")
    return values or {}


def load_study(path: str | Path) -> Study:
    """Read a study YAML into settings (call .validate() before running it)."""
    return from_dict(Study, read_study_yaml(path))


def study_to_dict(study: Study) -> dict[str, Any]:
    return dataclasses.asdict(study)


# Settings that may change between chunks of one study without touching a recorded run: which runs
# exist, where files live, how evaluation is batched and where logs go. Everything else (and the
# first seed, which trains stage 1) decides what a run computes.
RESUMABLE_CHANGES = frozenset({
    "languages", "methods", "fusions", "seeds", "output_dir", "device", "data.data_dir", "data.translations_dir",
    *(f"{stage}.{name}" for stage in ("stage1", "stage2")
      for name in ("eval_batch_size", "gradient_checkpointing", "tensorboard", "wandb_project")),
})


def changed_settings(recorded: Study, study: Study) -> list[str]:
    """Where `study` differs from the settings a study's runs were recorded with (its study.yaml), as
    "name: old -> new"."""
    before, now = _flatten(study_to_dict(recorded)), _flatten(study_to_dict(study))
    changes = [
        f"{name}: {before[name]!r} -> {value!r}" for name, value in now.items()
        if name not in RESUMABLE_CHANGES and before[name] != value
    ]
    if recorded.seeds and study.seeds and recorded.seeds[0] != study.seeds[0]:
        changes.append(f"first seed (it trains stage 1): {recorded.seeds[0]!r} -> {study.seeds[0]!r}")
    return changes


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
