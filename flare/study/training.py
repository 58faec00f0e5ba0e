"""The training loop of both stages (a plain recipe over accelerate).

After every epoch the trainable weights, the optimizer and scheduler state, the RNG state and the
best weights so far are written (safetensors + JSON, atomically) to `<run>/checkpoint/`. A run
that finds a checkpoint continues after its epoch; because each epoch's data order comes from
(seed, epoch) and the RNG state is restored, the resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, is_initialized
from accelerate.tracking import LOGGER_TYPE_TO_CLASS
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from flare.adapter.sharding import copy_full_into, full_tensor, shard_flare_model
from flare.errors import FlareError
from flare.files import atomic_dir, write_atomically
from flare.hf.checks import safetensors_problem
from flare.hf.device import autocast, autocast_dtype, model_device
from flare.study.sampling import LanguageMix
from flare.study.settings import StageSettings, trackers
from flare.study.sharding import requested_sharding

# The resume checkpoint's files (written at each epoch's end, read by a rerun and checked by the plan)
STATE_FILE, TRAINABLE_FILE, OPTIMIZER_FILE, RNG_FILE, BEST_FILE = (
    "state.json", "trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "best.safetensors"
)

Evaluate = Callable[[torch.nn.Module], float]


@dataclass
class TrainResult:
    """What `fit` returns: the best validation score and its epoch (the weights kept), how far
    training went, the per-epoch history and this call's per-batch losses."""

    best_score: float | None
    best_epoch: int
    epochs: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # each batch's loss (over all processes) this call


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, torch.Tensor]:
    """AdamW state as named tensors (no pickle)."""
    tensors = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for name, param in zip(names, params):
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"{name}::{key}"] = full_tensor(torch.as_tensor(value)).detach().cpu().contiguous()
    return tensors


def _load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, names: list[str], tensors: dict[str, torch.Tensor]
) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for name, param in zip(names, params):
        state = {
            key.split("::", 1)[1]: _like(param, value)
            for key, value in tensors.items() if key.split("::", 1)[0] == name
        }
        if state:
            optimizer.state[param] = state


def _like(param: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """An optimizer state tensor placed like its parameter (sharded like it under FSDP2)."""
    if isinstance(param, DTensor) and value.shape == param.shape:
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value.to(param.device)


def fit(
    model: torch.nn.Module,
    train_items: Sequence[Any] | LanguageMix,
    collate: Callable[[Sequence[Any]], dict[str, torch.Tensor]],
    settings: StageSettings,
    seed: int,
    run_dir: Path,
    evaluate: Evaluate | None = None,
    description: str = "train",
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train the model's trainable parameters; leave it holding the best (or last) weights.

    Args:
        model: a model whose trainable parameters are the adapter (and head).
        train_items: examples or pairs; `collate` turns a list of them into a batch. A `LanguageMix`
            (joint training) draws each epoch's items anew from (seed, epoch).
        collate: the batch builder (e.g. a flare.hf.formats.PairFormatter).
        settings: learning rate, epochs, batch size and the rest of the stage.
        seed: seeds data order, dropout and initialisation.
        run_dir: where logs and the resumable checkpoint go.
        evaluate: returns the validation score (higher is better) after each epoch.
        description: label of the progress bar.
        stop_after_steps: stop abruptly after this many optimizer steps (tests of resumption).
    """
    recipe = _Recipe(model, math.ceil(len(train_items) / settings.batch_size), settings, seed, run_dir, description)
    recipe.resume()
    for epoch in range(recipe.state["epoch"], settings.epochs):
        items = train_items.epoch(epoch) if isinstance(train_items, LanguageMix) else list(train_items)
        losses, started = recipe.train_epoch(epoch, items, collate, stop_after_steps)
        recipe.end_epoch(epoch, losses, started, evaluate)
    return recipe.finish()


class _Recipe:
    """fit's steps, torchtune-style: set up (device, accelerate, sharding, optimizer, schedule),
    resume from the checkpoint, train one epoch, end an epoch (validate, keep the best, checkpoint,
    log), finish (the best weights back in the model)."""

    def __init__(self, model: torch.nn.Module, batches_per_epoch: int, settings: StageSettings, seed: int,
                 run_dir: Path, description: str) -> None:
        self.settings, self.seed, self.description = settings, seed, description
        # The model was loaded onto its device (flare/hf/device.py); accelerate trains it there.
        device = self.device = model_device(model)
        if is_initialized() and AcceleratorState().device.type != device.type:
            # accelerate fixes one device per process and would silently move the model to it
            raise FlareError(
                f"this process already trained on {AcceleratorState().device}; train the model on {device} in a new "
                "process"
            )
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)
        # Autocast is ours, not accelerate's mixed_precision: accelerate fixes that once per process,
        # and a process may train models of several dtypes. Trainable weights stay float32.
        self.amp = autocast_dtype(model, settings.mixed_precision)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp == torch.float16 else None
        # split_batches: under `accelerate launch` each process takes its share of every batch, so
        # N processes train exactly like one process with the same batch size
        accelerator = self.accelerator = Accelerator(
            gradient_accumulation_steps=settings.gradient_accumulation, cpu=device.type == "cpu",
            dataloader_config=DataLoaderConfiguration(split_batches=True),
        )
        torch.manual_seed(seed)
        if settings.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        plan = requested_sharding()
        if plan is not None and accelerator.num_processes > 1:
            # FSDP2: each layer one unit, the model the root; the parameters become shards, so the
            # optimizer is built after this, on them
            shard_flare_model(model, init_device_mesh(device.type, (accelerator.num_processes,)), plan.layers,
                              plan.reshard_after_forward)
        elif accelerator.num_processes > 1:
            model = accelerator.prepare_model(model)  # DDP: gradients averaged across the processes
        self.model = model
        # named as in the unwrapped model (DDP would prefix "module."): the checkpoint reads the same in any launch
        self.names = list(_trainable(self.unwrapped))
        self.params = list(_trainable(self.unwrapped).values())
        optimizer = torch.optim.AdamW(self.params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        total_steps = math.ceil(batches_per_epoch / settings.gradient_accumulation) * settings.epochs
        scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total_steps), total_steps)
        # In one process there is nothing to wrap (the model is already on its device), and accelerate
        # would refuse a 4-bit model on cuda:N with N > 0: its own device there is the bare "cuda".
        self.optimizer, self.scheduler = accelerator.prepare(optimizer, scheduler)
        self.checkpoint, self.log_path = run_dir / "checkpoint", run_dir / "train_log.csv"
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "best_score": None, "best_epoch": 0, "history": []}
        self.best: dict[str, torch.Tensor] = {}
        # objectives scheduled by the optimizer step (X-Mixup's sampling, mid-align's alternation) read it
        # from here, so a resumed run continues their schedule where it stopped
        self.set_step = getattr(self.unwrapped, "set_training_step", None)
        self.loggers = _Loggers(settings, run_dir, description) if accelerator.is_main_process else None
        self.step_losses: list[float] = []

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def resume(self) -> None:
        """Continue after the last finished epoch of an interrupted run, where its checkpoint says."""
        checkpoint = self.checkpoint
        if not (checkpoint / STATE_FILE).is_file():
            return
        try:
            state = json.loads((checkpoint / STATE_FILE).read_text())
            weights = load_file(checkpoint / TRAINABLE_FILE)
            optimizer_state = load_file(checkpoint / OPTIMIZER_FILE)
            rng = load_file(checkpoint / RNG_FILE)["cpu"]
            best = load_file(checkpoint / BEST_FILE) if (checkpoint / BEST_FILE).is_file() else {}
            for name, param in _trainable(self.unwrapped).items():
                copy_full_into(param, weights[name])
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
            raise FlareError(
                f"{checkpoint}: unreadable training checkpoint ({type(error).__name__}); delete it to restart this run"
            ) from None
        self.state, self.best = state, best
        _load_optimizer_tensors(self.optimizer, self.names, optimizer_state)
        self.scheduler.load_state_dict(state["scheduler"])
        # load_state_dict restores the schedule's position but not the optimizer's current rate
        for group, rate in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = rate
        torch.set_rng_state(rng)

    def train_epoch(self, epoch: int, items: list, collate: Callable, stop_after_steps: int | None,
                    ) -> tuple[list[float], float]:
        """One pass over `items` in the (seed, epoch) order; the batches' losses and when it started."""
        accelerator, settings, state, model = self.accelerator, self.settings, self.state, self.model
        model.train()
        order = torch.Generator().manual_seed(self.seed * 1000 + epoch)  # the same order after a resume
        loader = DataLoader(items, batch_size=settings.batch_size, shuffle=True, generator=order, collate_fn=collate)
        loader = accelerator.prepare_data_loader(loader)
        losses, start = [], time.perf_counter()
        bar = tqdm(loader, desc=f"{self.description} epoch {epoch + 1}/{settings.epochs}", leave=False,
                   dynamic_ncols=True, disable=not accelerator.is_main_process)
        for batch in bar:
            if self.set_step is not None:
                self.set_step(state["step"])
            losses.append(self._step(batch))
            self.step_losses.append(losses[-1])
            if accelerator.sync_gradients:
                state["step"] += 1
                if self.loggers:
                    self.loggers.step(state["step"], losses[-1], self.scheduler.get_last_lr()[0])
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
            if stop_after_steps is not None and state["step"] >= stop_after_steps:
                raise KeyboardInterrupt(f"stopped after {state['step']} steps (stop_after_steps)")
        return losses, start

    def _step(self, batch: dict) -> float:
        """Forward, backward and (when gradients sync) an optimizer step; the batch's loss over all
        processes (each computed the loss of its share)."""
        accelerator, optimizer, scaler = self.accelerator, self.optimizer, self.scaler
        with accelerator.accumulate(self.model):
            with autocast(self.device, self.amp):
                loss = self.model(**batch).loss
            accelerator.backward(scaler.scale(loss) if scaler else loss)
            if accelerator.sync_gradients and scaler:
                scaler.unscale_(optimizer)
            if accelerator.sync_gradients and self.settings.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.params, self.settings.max_grad_norm)
            if scaler is None:
                optimizer.step()  # accelerate's wrapper steps only when gradients sync
            elif accelerator.sync_gradients:
                scaler.step(optimizer)  # skips a step whose float16 gradients overflowed
                scaler.update()
            self.scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return accelerator.reduce(loss.detach(), "mean").item() if accelerator.num_processes > 1 else loss.item()

    def end_epoch(self, epoch: int, losses: list[float], started: float, evaluate: Evaluate | None) -> None:
        """Validate, keep the best weights, write the checkpoint and the log (the epoch's seconds:
        training and validation, from `started`)."""
        state, accelerator = self.state, self.accelerator
        # every process scores the whole validation set with the unwrapped model: same selection
        score = evaluate(self.unwrapped) if evaluate is not None else None
        row = {"epoch": epoch + 1, "step": state["step"], "train_loss": sum(losses) / max(len(losses), 1),
               "valid_score": score, "seconds": round(time.perf_counter() - started, 2)}
        state["history"].append(row)
        improved = score is not None and (state["best_score"] is None or score > state["best_score"])
        if improved or not self.settings.select_best or evaluate is None:
            state["best_score"], state["best_epoch"] = score, epoch + 1
            self.best = _whole_trainable(self.unwrapped)
        state["epoch"] = epoch + 1
        state["scheduler"] = self.scheduler.state_dict()
        # gathered on every process (shards are gathered collectively), written by the first
        weights = _whole_trainable(self.unwrapped)
        optimizer_tensors = _optimizer_tensors(self.optimizer, self.names)
        if accelerator.is_main_process:
            _save_checkpoint(self.checkpoint, weights, optimizer_tensors, state, self.best)
            _write_log(self.log_path, state["history"])
            self.loggers.epoch(row)
        accelerator.wait_for_everyone()

    def finish(self) -> TrainResult:
        """The best weights back in the model (the last ones without validation), and the result."""
        if self.loggers:
            self.loggers.close()
        if self.best:
            for name, param in _trainable(self.unwrapped).items():
                copy_full_into(param, self.best[name])
        state = self.state
        return TrainResult(state["best_score"], state["best_epoch"], state["epoch"], state["step"], state["history"],
                           self.step_losses)


class _Loggers:
    """Experiment trackers beside the CSV log, through accelerate's tracker classes: TensorBoard,
    W&B, MLflow, Comet, Aim, ClearML, ... with one interface (the plan has checked their packages)."""

    def __init__(self, settings: StageSettings, run_dir: Path, name: str) -> None:
        project = settings.wandb_project or "flare-xlt"
        # per-tracker arguments: where its local files go, and this run's name
        extra = {"wandb": {"name": name, "dir": str(run_dir)}, "mlflow": {"run_name": name}}
        self.trackers = []
        for tracker_name in trackers(settings):
            cls = LOGGER_TYPE_TO_CLASS[tracker_name]
            if tracker_name == "tensorboard":  # events in <run>/tensorboard, as before
                tracker = cls("tensorboard", run_dir)
            elif cls.requires_logging_directory:
                tracker = cls(project, run_dir / tracker_name, **extra.get(tracker_name, {}))
            else:
                tracker = cls(project, **extra.get(tracker_name, {}))
            tracker.start()
            self.trackers.append(tracker)

    def _log(self, values: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def step(self, step: int, loss: float, learning_rate: float) -> None:
        self._log({"train/loss": loss, "train/learning_rate": learning_rate}, step)

    def epoch(self, row: dict[str, Any]) -> None:
        if row["valid_score"] is not None:
            self._log({"valid/score": row["valid_score"]}, row["step"])

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


def _whole_trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights as whole CPU tensors (FSDP2 shards gathered: every process must call this)."""
    return {n: full_tensor(p.detach()).cpu().clone().contiguous() for n, p in _trainable(model).items()}


def _save_checkpoint(directory: Path, weights: dict, optimizer_tensors: dict, state: dict, best: dict) -> None:
    with atomic_dir(directory) as staging:
        save_file(weights, staging / TRAINABLE_FILE)
        save_file(optimizer_tensors, staging / OPTIMIZER_FILE)
        save_file({"cpu": torch.get_rng_state()}, staging / RNG_FILE)
        if best:
            save_file(best, staging / BEST_FILE)
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    """The per-epoch log as CSV (rewritten whole: it is small, and never half-written)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_atomically(path, buffer.getvalue())


def check_checkpoint(directory: Path) -> None:
    """A resume checkpoint that training would read must be complete and readable."""
    if not (directory / STATE_FILE).is_file():
        return  # training starts from scratch
    hint = "delete that folder to restart the run from its beginning"
    try:
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise FlareError(f"resume checkpoint {directory}: state.json is corrupt ({error}); {hint}") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise FlareError(f"resume checkpoint {directory}: state.json has no epoch; {hint}")
    for name in (TRAINABLE_FILE, OPTIMIZER_FILE, RNG_FILE):
        if (problem := safetensors_problem(directory / name)) is not None:
            raise FlareError(f"resume checkpoint {directory}: {name} is missing or corrupt ({problem}); {hint}")
