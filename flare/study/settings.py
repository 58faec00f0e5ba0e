"""Typed settings of a study, loadable from YAML and overridable from the command line.

A study is one task and one model: stage 1 fine-tunes on English, then every method adapts to
every target language for every seed. Every field is documented here, the adapter's where the
adapter declares them (FlareConfig, flare/adapter/config.py); `flare compare --help` prints the same
text. The values are checked by flare/setting_types.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from flare.adapter.config import CROSS_ATTENTION_QUERIES, FUSIONS, FlareConfig, parse_layers
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.files import load_yaml, read_text
from flare.hf.backbone import Family
from flare.mt.english_side import ENGLISH_SIDES
from flare.mt.languages import check_language_map, flores_codes
from flare.setting_types import Range, check_type, fields_of, from_dict
from flare.study.methods import FUSED, METHOD_NAMES, METHODS
from flare.study.sharding import check_sharding

# A study's lists of runs (dotted setting names): each must be a list without repeats, may grow
# between chunks of a study (the folder's study.yaml keeps the union), and is hidden from the
# single-run commands, which take one method, language and seed of their own.
RUN_LISTS = ("languages", "methods", "fusions", "seeds", "data.train_english", "data.test_english")
JOINT_LISTS = ("joint.training", "joint.held_out")  # the same, for the adapters of many languages


def setting_value(study: Any, name: str) -> Any:
    """The value of a dotted setting name ("data.max_length") of a Study, or of its dict form."""
    section, _, key = name.rpartition(".")
    if not section:
        parent = study
    elif isinstance(study, dict):
        parent = study.get(section) or {}
    else:
        parent = getattr(study, section)
    return parent.get(key) if isinstance(parent, dict) else getattr(parent, key)


# accelerate's tracker names (accelerate.tracking.LOGGER_TYPE_TO_CLASS) -> the package each needs
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml", "aim": "aim",
    "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio",
}
TRACKERS = tuple(TRACKER_PACKAGES)


Positive = Annotated[int, Range(1)]
Count = Annotated[int, Range(0)]  # 0 means "all" or "none", as documented per setting
Seed = Annotated[int, Range(0, 2**32 - 1)]  # what every RNG (torch, numpy, python) accepts


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
        tensorboard: also log loss, learning rate and validation score for TensorBoard (the same as
            adding tensorboard to log_with; needs `pip install 'flare-xlt[tracking]'`).
        wandb_project: also log to this Weights & Biases project (needs `pip install wandb`).
        log_with: experiment trackers, through accelerate's tracker classes (each needs its package:
            wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio or tensorboard); logs go
            under each run's folder where the tracker keeps local files.
        align_layer: mid-align (stage 2): the layer whose output is aligned, 1 = the first layer's
            output; 0 = the middle layer (num_hidden_layers // 2). Checked against the model's depth.
        align_schedule: mid-align: "alternate" (the paper's: optimizer steps alternate between the
            task loss and the alignment loss) or "sum" (task loss + align_weight x alignment loss
            at every step).
        align_weight: mid-align with align_schedule "sum": the alignment loss's weight.
        mixup_layer: x-mixup (stage 2): the 0-based layer where the target stream cross-attends
            to the English stream (the original: 0 for sentence classification). Checked against the
            model's depth; saved with the adapter.
    """

    learning_rate: Annotated[float, Range(0, 10, low_open=True)] = 5e-4
    epochs: Annotated[int, Range(1, 10_000)] = 4
    batch_size: Positive = 16
    eval_batch_size: Positive = 32
    gradient_accumulation: Positive = 1
    warmup_ratio: Annotated[float, Range(0, 1)] = 0.06
    weight_decay: Annotated[float, Range(0)] = 0.01
    max_grad_norm: Annotated[float, Range(0)] = 1.0
    gradient_checkpointing: bool = False
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    select_best: bool = True
    tensorboard: bool = False
    wandb_project: str | None = None
    log_with: list[Literal[TRACKERS]] = field(default_factory=list)
    align_layer: Annotated[int, Range(0, 4096)] = 0
    align_schedule: Literal["alternate", "sum"] = "alternate"
    align_weight: Annotated[float, Range(0, 1000)] = 1.0
    mixup_layer: Annotated[int, Range(0, 4095)] = 0


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
        train_english: English sides to train with (flare, input-fusion, translate-train+english,
            mid-align; x-mixup draws each non-gold side against gold per step), one run each: gold,
            shuffled (another example's English), self (the target text), noise10/30/50 (word
            dropout/replacement on the gold English), lexicon (word-by-word NusaX-lexicon MT); see
            flare/mt/english_side.py. Valid data gets the same side (x-mixup's: gold).
        test_english: English sides to test with (flare, input-fusion, translate-test, x-mixup); each
            trained run is scored on every one of them.
        lexicon_dir: folder of the NusaX lexicons for the lexicon side (default: <data_dir>/nusax-lexicon).
        english_cache: FLARE's English states in stage 2 (they cannot change while the adapter
            trains): "auto" computes each example's once and reuses them in later epochs and in
            every validation and test pass where they fit the budgets below, and otherwise
            recomputes them with a one-line note; "on" is the same but refuses, in one line, a run
            whose states do not fit; "off" recomputes them in every pass. Results are the same
            bit for bit in all three (docs/library.md, "Computing the English side once").
        english_cache_ram_mib: memory the cached English states may take (MiB); the runs of one
            command share them (the same backbone and English sentences: once per study).
        english_cache_disk_mib: past the memory budget, disk the states may take (MiB), in
            safetensors files under the study folder read memory-mapped (`english_cache/`, removed
            when the command ends; an interrupted study resumes with them).
    """

    data_dir: str | None = None
    translations_dir: str | None = None
    source: Literal["gold", "machine", "auto"] = "auto"
    train_split: str = "train"
    valid_split: str = "valid"
    test_split: str = "test"
    valid_size: Count = 0
    max_train: Count = 0
    max_valid: Count = 0
    max_test: Count = 0
    max_length: Annotated[int, Range(1, 1 << 20)] = 128
    train_english: list[Literal[ENGLISH_SIDES]] = field(default_factory=lambda: ["gold"])
    test_english: list[Literal[ENGLISH_SIDES]] = field(default_factory=lambda: ["gold"])
    lexicon_dir: str | None = None
    english_cache: Literal["auto", "on", "off"] = "auto"
    english_cache_ram_mib: Annotated[int, Range(0, 1 << 30)] = 2048
    english_cache_disk_mib: Annotated[int, Range(0, 1 << 30)] = 8192


@dataclass
class JointSettings:
    """One adapter for many target languages (docs/studies.md): which adapters the trained methods get, and
    how a joint adapter's training mixes its languages.

    Args:
        training: the adapters of every trained method and seed: "per-language" (one per target
            language, as in the paper) and/or "joint" (one trained on all of `languages` together,
            scored on each of them). Both: the report shows the joint rows beside the per-language ones.
        held_out: languages of the study each left out of a joint adapter in turn (leave-one-language-out):
            for each, one adapter per trained method and seed is trained on the other languages and
            scored on the held-out one only, with its English side at test time. Empty: none.
        sampling: how a joint epoch draws its languages: "proportional" (p_l = n_l / sum n, every
            example once per epoch when epoch_size is 0) or "temperature" (p_l proportional to
            n_l^(1/temperature): small languages up-sampled, as in multilingual MT).
        temperature: T of temperature sampling (1 is proportional; larger flattens towards uniform).
        epoch_size: examples per joint epoch; 0: the number of training examples of all its
            languages together. Each language gets round(epoch_size * p_l) examples (largest
            remainders), drawn without replacement from a permutation of its examples (cycling when a
            language is up-sampled), freshly for each epoch from (seed, epoch): the same seed gives the
            same epochs, after a resume too.
    """

    training: list[Literal["per-language", "joint"]] = field(default_factory=lambda: ["per-language"])
    held_out: list[str] = field(default_factory=list)
    sampling: Literal["proportional", "temperature"] = "temperature"
    temperature: Annotated[float, Range(1, 1000)] = 5.0
    epoch_size: Count = 0


# The adapter fields a study sets, declared and documented once, by FlareConfig; the rest of
# FlareConfig follows from the method (fusion, source_dim), the task and the model family.
STUDY_ADAPTER_FIELDS = (
    "r", "lora_alpha", "lora_dropout", "target_modules", "source_position", "decode_fusion",
    "cross_attention_heads", "fuse_modules", "fuse_layers", "english_gate",
)


@dataclass
@fields_of(FlareConfig, *STUDY_ADAPTER_FIELDS)
class AdapterSettings:
    """The LoRA / FLARE adapter of both stages."""

    def flare_kwargs(self) -> dict[str, Any]:
        """These settings as `FlareConfig` arguments; an empty module list means FlareConfig's default."""
        values = dataclasses.asdict(self)
        for name in ("target_modules", "fuse_modules"):
            values[name] = values[name] or None
        return values


@dataclass
class Study:
    """A comparison of methods on one task and model.

    Args:
        task: built-in task (xnli, nusax, tydiqa) or a custom task YAML file.
        model: model id, local path or alias (e.g. multilingual-e5-small, resolved offline).
        languages: target languages (project codes of the task, e.g. jav, sun).
        methods: any of zero-shot, translate-test, translate-train, translate-train+english (LoRA on the
            target data plus its English sides as extra examples), x-mixup (two mixed streams, needs
            the English side at test), input-fusion, flare, flare-mt, mid-align (LoRA aligned with the
            English side at a middle layer in training; reads the target alone at test).
        fusions: fusion functions tried for the flare and flare-mt methods.
        seeds: seeds of stage 2 (stage 1 uses the first).
        output_dir: where checkpoints, logs and results go.
        mt_model: NLLB/M2M100 model whose encoder feeds flare-mt.
        language_map: project language code -> FLORES-200 code for the MT model, e.g. {mad: ind_Latn}
            for a language NLLB lacks (FLORES codes such as swh_Latn also work as languages directly).
        stage1_model: an English task model (folder or Hub id) to use as stage 1 instead of training
            one, e.g. another study's <output_dir>/stage1/model: sweeps of stage 2 share one stage 1.
        family: the model's input family: "encoder", "decoder" or "encoder-decoder"; empty: inferred
            from transformers' auto classes (set it for an architecture they do not classify).
        load_in_4bit: load the base in 4-bit NF4 (bitsandbytes; stage 1 is then merged into a
            de-quantised copy, see docs/scale.md).
        device: "auto" (this process's CUDA GPU, else MPS, else the CPU), "cuda" (this process's GPU:
            cuda:LOCAL_RANK under torchrun or accelerate launch), "cuda:N", "mps" or "cpu".
        dtype: dtype of the frozen base: "auto" (bfloat16 on a GPU that has it, else float16; float32
            on the CPU), "float32", "bfloat16" or "float16". Adapter weights stay float32 (autocast).
        data: which examples each stage sees.
        joint: one adapter for many target languages (joint training, leave-one-language-out).
        adapter: the LoRA / FLARE adapter.
        stage1: English task fine-tuning.
        stage2: cross-lingual adaptation.
    """

    task: str = "nusax"
    model: str = "multilingual-e5-small"
    languages: list[str] = field(default_factory=lambda: ["jav"])
    methods: list[Literal[METHOD_NAMES]] = field(default_factory=lambda: ["zero-shot", "translate-train", "flare"])
    fusions: list[Literal[FUSIONS]] = field(default_factory=lambda: ["add_relu"])
    seeds: list[Seed] = field(default_factory=lambda: [1])
    output_dir: str = "runs/study"
    mt_model: str | None = None
    language_map: dict[str, str] = field(default_factory=dict)
    stage1_model: str | None = None
    family: Family | None = None
    load_in_4bit: bool = False
    device: str = "auto"
    dtype: str = "auto"
    data: DataSettings = field(default_factory=DataSettings)
    joint: JointSettings = field(default_factory=JointSettings)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    stage1: StageSettings = field(default_factory=StageSettings)
    stage2: StageSettings = field(default_factory=StageSettings)

    def validate(self) -> Study:
        """Fail before any work starts, with one line naming the field: every value against the
        type and range declared above (settings built in Python skip `from_dict`), then the rules
        that tie settings together. A study validated before and unchanged since is not checked
        again (the CLI validates while it parses, then the pipeline it starts)."""
        snapshot = dataclasses.asdict(self)
        if getattr(self, "_validated", None) == snapshot:
            return self
        from_dict(type(self), snapshot)
        task = get_task(self.task)
        for name in (*RUN_LISTS, *JOINT_LISTS):
            values = setting_value(self, name)
            if not values and name != "joint.held_out" and (name != "fusions" or any(m in FUSED for m in self.methods)):
                needs = " (the flare methods need a fusion)" if name == "fusions" else ""
                raise FlareError(f"{name}: the list is empty; give at least one{needs}")
            repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if repeated is not None:
                raise FlareError(f"{name}: {repeated!r} is listed twice")
        for language in self.languages:
            task.check_language(language)
            if language == task.source_language:
                raise FlareError(f"languages: {language} is the source language of {task.name}, not a target")
        if "x-mixup" in self.methods and task.type != "classification":
            # the QA variant needs English span labels on the English stream (gold English only)
            raise FlareError(f"methods: x-mixup is implemented for classification tasks, not {task.type} ({task.name})")
        for language in self.joint.held_out:
            if language not in self.languages:
                raise FlareError(f"joint.held_out: {language} is not one of the study's languages")
        if self.joint.held_out and len(self.languages) < 2:
            raise FlareError("joint.held_out: leaving a language out needs at least two languages")
        if any(METHODS[m].mt_states for m in self.methods) and not self.mt_model:
            raise FlareError("mt_model: the flare-mt method needs an NLLB/M2M100 model")
        if any(METHODS[m].mt_states for m in self.methods):  # every language the MT encoder will tag, before stage 1
            flores_codes([*self.languages], self.language_map)
        elif self.language_map:
            check_language_map(self.language_map)
        adapter = self.adapter
        try:
            parse_layers(adapter.fuse_layers)
        except FlareError as error:
            raise FlareError(f"adapter.{error}") from None
        fused = set(FUSED) & set(self.methods)
        cross = [f for f in self.fusions if f in CROSS_ATTENTION_QUERIES] if fused else []
        if cross and adapter.r % adapter.cross_attention_heads:
            raise FlareError(
                f"adapter.cross_attention_heads: {adapter.cross_attention_heads} does not divide adapter.r "
                f"{adapter.r} (needed by the {cross[0]} fusion)"
            )
        from flare.hf.device import dtype_name  # torch: settings stay torch-free for `flare report`

        placement = self.placement()  # a missing GPU fails here
        # what an FSDP launch config cannot train
        check_sharding(placement.device.type, dtype_name(placement.dtype), self.load_in_4bit, self.adapter.english_gate)
        for name in ("stage1", "stage2"):
            placement.check_mixed_precision(getattr(self, name).mixed_precision, f"{name}.mixed_precision")
            check_trackers(getattr(self, name), name)
        for name in ("model", "stage1_model"):
            value = getattr(self, name)
            if value is None:
                continue
            local = Path(value)
            looks_local = value.startswith((".", "/", "~")) or local.exists()
            if looks_local and not (local.expanduser() / "config.json").is_file():
                raise FlareError(f"{name}: {value} is not a model directory (no config.json)")
        self._validated = snapshot
        return self

    def placement(self) -> Any:
        """Where this study's models run (flare.hf.device.Placement): resolved once, and again only
        if device, dtype or load_in_4bit change."""
        key = (self.device, self.dtype, self.load_in_4bit)
        if getattr(self, "_placement", (None,))[0] != key:
            from flare.hf.device import resolve_placement  # torch: settings stay torch-free for `flare report`

            self._placement = (key, resolve_placement(*key))
        return self._placement[1]


def trackers(stage: StageSettings) -> list[str]:
    """The accelerate trackers a stage logs to: log_with, plus the tensorboard and wandb_project switches."""
    names = list(stage.log_with)
    if stage.tensorboard:
        names.append("tensorboard")
    if stage.wandb_project:
        names.append("wandb")
    return list(dict.fromkeys(names))


def check_trackers(stage: StageSettings, where: str) -> None:
    """Every tracker's package is installed: found in the plan, not after stage 1 has trained."""
    for name in trackers(stage):
        package = TRACKER_PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            install = "'flare-xlt[tracking]'" if package == "tensorboard" else package
            raise FlareError(
                f"{where}.log_with: the {name} tracker needs the {package} package (pip install {install})"
            )


def check_setting(name: str, value: Any) -> Any:
    """One setting of a study by its dotted name (e.g. "stage2.learning_rate"), checked as `from_dict`
    checks it; FlareError when it is not a valid value, KeyError when there is no such setting."""
    cls, *parents, key = [Study, *name.split(".")]
    for parent in parents:
        cls = typing.get_type_hints(cls)[parent]
    hint = typing.get_type_hints(cls, include_extras=True)[key]
    return from_dict(hint, value, name) if dataclasses.is_dataclass(hint) else check_type(value, hint, name)


def declared_ranges(cls: type | None = None, prefix: str = "") -> dict[str, str]:
    """The `Range` of every number setting by dotted name (list items included), for `--help`."""
    ranges: dict[str, str] = {}
    for key, hint in typing.get_type_hints(cls or Study, include_extras=True).items():
        if dataclasses.is_dataclass(hint):
            ranges.update(declared_ranges(hint, f"{prefix}{key}."))
            continue
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
        found = [c for c in getattr(item, "__metadata__", ()) if isinstance(c, Range)]
        if found:
            ranges[prefix + key] = ("each " if item is not hint else "") + repr(found[0])
    return ranges


def read_study_yaml(path: str | Path) -> dict[str, Any]:
    """The settings mapping of a study YAML: UTF-8, the project's safe loader (no Python objects,
    no duplicate keys, no alias bombs), a mapping. Every problem is one FlareError line naming the
    file (and line)."""
    if not Path(path).is_file():
        raise FlareError(f"{path}: config file not found")
    values = load_yaml(read_text(path), str(path))
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
    *RUN_LISTS, *JOINT_LISTS, "output_dir", "device", "data.data_dir", "data.translations_dir", "data.lexicon_dir",
    "data.english_cache", "data.english_cache_ram_mib", "data.english_cache_disk_mib",  # results stay the same
    *(f"{stage}.{name}" for stage in ("stage1", "stage2")
      for name in ("eval_batch_size", "gradient_checkpointing", "tensorboard", "wandb_project", "log_with")),
})


def changed_settings(recorded: Study, study: Study) -> list[str]:
    """Where `study` differs from the settings a study's runs were recorded with (its study.yaml), as
    "name: old -> new"; stage-2 changes are not among them (they make a variant, see `stage2_variant`)."""
    before, now = _flatten(study_to_dict(recorded)), _flatten(study_to_dict(study))
    changes = [
        f"{name}: {before[name]!r} -> {value!r}" for name, value in now.items()
        if name not in RESUMABLE_CHANGES and not name.startswith("stage2.") and before[name] != value
    ]
    if recorded.seeds and study.seeds and recorded.seeds[0] != study.seeds[0]:
        changes.append(f"first seed (it trains stage 1): {recorded.seeds[0]!r} -> {study.seeds[0]!r}")
    return changes


def stage2_variant(recorded: Study, study: Study) -> str | None:
    """The stage-2 settings where `study` differs from a folder's recorded ones, as a name such as
    "learning_rate=0.0001,epochs=8" (None: the same). Such a sweep point lives beside the recorded
    runs in one folder and reuses its stage-1 model."""
    before, now = _flatten(study_to_dict(recorded)), _flatten(study_to_dict(study))
    changed = [(name.split(".", 1)[1], value) for name, value in now.items()
               if name.startswith("stage2.") and name not in RESUMABLE_CHANGES and before[name] != value]
    return ",".join(f"{name}={value}" for name, value in changed) or None


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
