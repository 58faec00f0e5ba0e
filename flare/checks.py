"""Checks run before any work: each turns a file that would fail hours into a study into one
FlareError line naming it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from flare.errors import FlareError

if TYPE_CHECKING:
    from flare.formats import Family
    from flare.settings import AdapterSettings
    from flare.tasks import Task


def position_limit(model: torch.nn.Module) -> int | None:
    """How many positions a model with learned absolute position embeddings (BERT, XLM-R, GPT-2)
    can embed; None for rotary, relative or sinusoidal positions, which have no hard limit."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("position_embeddings", "wpe") and isinstance(module, torch.nn.Embedding):
            # RoBERTa-style models count positions from padding_idx + 1
            return module.num_embeddings - (module.padding_idx + 1 if module.padding_idx is not None else 0)
    return None


def check_checkpoint(directory: Path) -> None:
    """A resume checkpoint that training would read must be complete and readable."""
    if not (directory / "state.json").is_file():
        return  # training starts from scratch
    from safetensors import SafetensorError, safe_open

    hint = "delete that folder to restart the run from its beginning"
    try:
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise FlareError(f"resume checkpoint {directory}: state.json is corrupt ({error}); {hint}") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise FlareError(f"resume checkpoint {directory}: state.json has no epoch; {hint}")
    for name in ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors"):
        try:
            with safe_open(directory / name, framework="pt"):
                pass
        except (OSError, SafetensorError) as error:
            raise FlareError(f"resume checkpoint {directory}: {name} is missing or corrupt ({error}); {hint}") from None


def check_weights(model_dir: Path) -> None:
    """The weight files of a local model folder can be read: every safetensors header (a truncated
    file fails here, not in the middle of loading), and a pickle-only checkpoint through torch's
    weights-only loader, memory-mapped (its tensors are not read)."""
    from safetensors import SafetensorError, safe_open

    safetensors = sorted(model_dir.glob("*.safetensors"))
    for path in safetensors:
        try:
            with safe_open(path, framework="pt"):
                pass
        except (OSError, SafetensorError) as error:
            raise FlareError(f"{path}: not a readable safetensors file ({error}); is it truncated?") from None
    if safetensors:
        return  # transformers loads these and never the pickles beside them
    for path in sorted(model_dir.glob("*.bin")):
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" in str(error):  # a pre-zip torch file: it cannot be mapped, transformers reads it whole
                continue
            raise FlareError(f"{path}: not a readable weights file ({str(error).splitlines()[0]})") from None
        except (pickle.UnpicklingError, EOFError, ValueError, OSError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise FlareError(
                f"{path}: torch refuses to read it as plain weights ({first[:200]}); save the model as safetensors"
            ) from None


def check_model(
    model: str, task: Task, adapter: AdapterSettings, max_length: int, longest: int, family: Family | None = None
) -> None:
    """The config loads, the weight files are readable, the longest input (`longest` tokens) fits the
    learned positions, and the adapter finds its modules in a weightless (meta) copy."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForQuestionAnswering,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
    )

    from flare.formats import model_family
    from flare.modeling import adapt, flare_config, resolve

    try:
        config = AutoConfig.from_pretrained(resolve(model))
    except (OSError, ValueError) as error:
        raise FlareError(
            f"model {model}: cannot load a config "
            f"({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})"
        ) from None
    if Path(resolve(model)).is_dir():
        check_weights(Path(resolve(model)))
    family = model_family(config, family)
    if family == "encoder":
        config.num_labels = max(len(task.labels), 1)
        cls = AutoModelForQuestionAnswering if task.type == "qa" else AutoModelForSequenceClassification
    else:
        cls = AutoModelForCausalLM if family == "decoder" else AutoModelForSeq2SeqLM
    try:
        with torch.device("meta"):
            skeleton = cls.from_config(config)
    except (ValueError, KeyError) as error:
        raise FlareError(
            f"model {model}: {cls.__name__} cannot build a {config.model_type} model ({str(error).splitlines()[0]})"
        ) from None
    limit = position_limit(skeleton)
    if limit is not None and longest > limit:
        doubled = longest > max_length  # input-level fusion reads both sides at once
        reads = (f"input-fusion reads 2 x data.max_length = {longest} tokens" if doubled
                 else f"data.max_length is {longest} tokens")
        raise FlareError(f"{reads}, more than the {limit} positions {model} can embed; lower data.max_length")
    with torch.device("meta"):
        adapt(skeleton, flare_config(adapter, task, family))
