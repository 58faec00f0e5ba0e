"""Checks run before any work: each turns a file that would fail hours into a study into one
FlareError line naming it."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig

from flare.data.task_spec import Task
from flare.errors import FlareError, first_line
from flare.hf.backbone import Family, model_family, spec_for
from flare.hf.loading import adapt, flare_config
from flare.hf.offline_e5 import model_location


def position_limit(model: torch.nn.Module) -> int | None:
    """How many positions a model with learned absolute position embeddings (BERT, XLM-R, GPT-2)
    can embed; None for rotary, relative or sinusoidal positions, which have no hard limit."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("position_embeddings", "wpe") and isinstance(module, torch.nn.Embedding):
            # RoBERTa-style models count positions from padding_idx + 1
            return module.num_embeddings - (module.padding_idx + 1 if module.padding_idx is not None else 0)
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be opened (missing, truncated, not safetensors), or None.
    Only its header is read, so a bad file fails here and not hours later mid-load."""
    try:
        with safe_open(path, framework="pt"):
            return None
    except (OSError, SafetensorError) as error:
        return str(error)


def check_weights(model_dir: Path) -> None:
    """The weight files of a local model folder can be read: every safetensors header (a truncated
    file fails here, not in the middle of loading), and a pickle-only checkpoint through torch's
    weights-only loader, memory-mapped (its tensors are not read)."""
    safetensors = sorted(model_dir.glob("*.safetensors"))
    for path in safetensors:
        if (problem := safetensors_problem(path)) is not None:
            raise FlareError(f"{path}: not a readable safetensors file ({problem}); is it truncated?")
    if safetensors:
        return  # transformers loads these and never the pickles beside them
    for path in sorted(model_dir.glob("*.bin")):
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" in str(error):  # a pre-zip torch file: it cannot be mapped, transformers reads it whole
                continue
            raise FlareError(f"{path}: not a readable weights file ({first_line(error)})") from None
        except (pickle.UnpicklingError, EOFError, ValueError, OSError) as error:
            raise FlareError(
                f"{path}: torch refuses to read it as plain weights ({first_line(error)[:200]}); "
                "save the model as safetensors"
            ) from None


def check_model(
    model: str, task: Task, adapter: Mapping[str, Any], max_length: int, longest: int, family: Family | None = None
) -> Any:
    """The config loads (it is returned), the weight files are readable, the longest input (`longest` tokens) fits the
    learned positions, and the adapter (FlareConfig arguments, as `flare_config` takes them) finds its modules in a
    weightless (meta) copy, built as load_backbone builds the real one (the same BackboneSpec)."""
    try:
        config = AutoConfig.from_pretrained(model_location(model))
    except (OSError, ValueError) as error:
        raise FlareError(f"model {model}: cannot load a config ({first_line(error)})") from None
    if Path(model_location(model)).is_dir():
        check_weights(Path(model_location(model)))
    spec = spec_for(model_family(config, family), task.type)
    for key, value in spec.head_config(len(task.labels)).items():
        setattr(config, key, value)
    cls = spec.model_class()
    try:
        with torch.device("meta"):
            skeleton = cls.from_config(config)
    except (ValueError, KeyError) as error:
        raise FlareError(
            f"model {model}: {cls.__name__} cannot build a {config.model_type} model ({first_line(error)})"
        ) from None
    limit = position_limit(skeleton)
    if limit is not None and longest > limit:
        doubled = longest > max_length  # input-level fusion reads both sides at once
        reads = (f"input-fusion reads 2 x data.max_length = {longest} tokens" if doubled
                 else f"data.max_length is {longest} tokens")
        raise FlareError(f"{reads}, more than the {limit} positions {model} can embed; lower data.max_length")
    with torch.device("meta"):
        adapt(skeleton, flare_config(adapter, task, spec.family))
    return config
