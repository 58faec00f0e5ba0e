"""The training objectives beyond the task loss, as the method table names them (`Method.objective`):
mid-align (flare/hf/midalign.py) and x-mixup (flare/hf/xmixup.py). What a run, `flare evaluate` and
`flare predict` need of them: the checks before any work, the model to train, the model of a saved
adapter, the training batches and what the record says about the English sides used."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flare.data.examples import Pair
from flare.data.task_spec import Task
from flare.errors import FlareError
from flare.hf.formats import PairFormatter
from flare.hf.midalign import MidAlignModel, model_depth, resolve_align_layer
from flare.hf.xmixup import SAMPLING_K, XMixupModel, check_mixing
from flare.study.methods import METHODS, Method
from flare.study.runs import Run
from flare.study.settings import Study


def check_objectives(study: Study, task: Task, config: Any) -> None:
    """One line, before any work, when a method cannot run with these settings on this model
    (`config`: the model's transformers config)."""
    methods = set(study.methods)
    if "mid-align" in methods:
        resolve_align_layer(study.stage2.align_layer, model_depth(config))
    if "x-mixup" in methods:
        if task.type != "classification":
            raise FlareError(f"methods: x-mixup is implemented for classification tasks, not {task.type} ({task.name})")
        check_mixing(config, study.stage2.mixup_layer)


def machine_side(method: Method, train_english: str | None) -> list[str]:
    """The English side a run samples besides gold (X-Mixup's machine English: lexicon MT or a noisy
    gold, or a control), as a list: empty for gold-only runs and other methods."""
    return [train_english] if method.samples_english and train_english not in (None, "gold") else []


def training_model(method: str, model: Any, study: Study, task: Task, seed: int) -> Any:
    """The model a run trains: the LoRA model itself, or it inside its objective."""
    objective = METHODS[method].objective
    if objective == "mid-align":
        stage = study.stage2
        return MidAlignModel(model, stage.align_layer, stage.align_schedule, stage.align_weight)
    if objective == "x-mixup":
        return XMixupModel(model, study.stage2.mixup_layer, task.type, seed)
    return model


def saved_model(method: str, model: Any, adapter: Path) -> Any:
    """The model of a saved adapter (`model`: its LoRA, loaded) as its method predicts with it."""
    if METHODS[method].objective == "x-mixup":
        return XMixupModel.load(model, adapter)
    return model  # a mid-align adapter is plain LoRA at test time


def training_batches(method: str, formatter: PairFormatter, machine: dict[str, list[Pair]]) -> Callable:
    """The collate function of a run's training items. X-Mixup's batches carry each machine side
    of the same examples (`machine`: side -> pairs in the order of the training items) as
    machine<k>_source_*; the model draws gold or one of them per step."""
    if METHODS[method].objective != "x-mixup" or not machine:
        return formatter
    by_side = [{pair.target.id: pair for pair in pairs} for pairs in machine.values()]

    def collate(items: Sequence[Pair]) -> dict:
        batch = formatter(items)
        for k, pairs in enumerate(by_side):
            side = formatter([pairs[item.target.id] for item in items])
            batch.update({f"machine{k}_{name}": tensor for name, tensor in side.items() if name.startswith("source_")})
        return batch

    return collate


def training_record(run: Run, model: Any, steps: int, study: Study, task: Task) -> dict[str, Any]:
    """What a record adds about the objective: X-Mixup's sampled side and how often gold was drawn."""
    method = METHODS[run.method]
    if method.objective == "x-mixup":
        sides = machine_side(method, run.train_english)
        return {"english_sampling": {
            "machine_sides": sides, "k": SAMPLING_K[task.type],
            "gold_steps": model.gold_steps(steps) if sides else steps, "steps": steps,
            "note": "" if sides else "gold only: the run's training English side is gold (no machine side)",
        }}
    if method.objective == "mid-align":
        stage = study.stage2
        return {"alignment": {"layer": model.layer, "schedule": stage.align_schedule,
                              "weight": stage.align_weight if stage.align_schedule == "sum" else None}}
    return {}
