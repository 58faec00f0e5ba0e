"""Which base model an adapter was saved for, recorded in its sidecar (flare_config.json) and
checked when it loads. Shapes alone do not tell: an adapter loads without a size mismatch onto
another checkpoint of the same architecture (an instruct model instead of its base), and onto
a deeper model of the same width, whose extra layers would simply run without LoRA.

A different architecture or layer count is refused, a different name is warned about (the same
weights are reached under several names: a Hub id, a local copy, a cache snapshot), and
`allow_base_mismatch=True` turns both into nothing more than a warning. Adapters saved before the
record existed load without the check."""

from __future__ import annotations

import warnings
from pathlib import PurePath
from typing import Any

from torch import nn

from flare.errors import FlareError

# config attributes that count layers, across families (GPT-2's n_layer maps to num_hidden_layers)
_LAYER_KEYS = ("num_hidden_layers", "num_layers", "num_decoder_layers", "encoder_layers", "decoder_layers")


def base_identity(backbone: nn.Module) -> dict[str, Any]:
    """The base model's name (config._name_or_path, None for a model built from a config),
    model_type and layer counts, as saved in the sidecar."""
    config = getattr(backbone, "config", None)
    name = getattr(config, "_name_or_path", None) or None
    layers = {}
    for key in _LAYER_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            layers[key] = value
    return {"name_or_path": name, "model_type": getattr(config, "model_type", None) or None, "layers": layers}


def short_name(name: str) -> str:
    """A model's name without where it lives: the repository of a Hub cache snapshot path, else
    the last path part, lower-cased ("meta-llama/Llama-3.1-8B" and "/models/llama-3.1-8b" agree)."""
    parts = PurePath(name.rstrip("/")).parts
    for index, part in enumerate(parts[:-1]):
        if part.startswith("models--") and parts[index + 1] == "snapshots":
            return part.split("--")[-1].lower()
    return parts[-1].lower() if parts else ""


def check_base(recorded: Any, backbone: nn.Module, where: str, allow_mismatch: bool) -> None:
    """Compare the sidecar's record with the base model about to receive the adapter: its
    architecture and depth (refused), before PEFT touches the model."""
    if not isinstance(recorded, dict):
        return  # saved before the record existed
    now = base_identity(backbone)
    problems = []
    if recorded.get("model_type") and now["model_type"] and recorded["model_type"] != now["model_type"]:
        problems.append(f"model_type {recorded['model_type']!r}, this base is {now['model_type']!r}")
    saved_layers = recorded.get("layers") if isinstance(recorded.get("layers"), dict) else {}
    for key, value in saved_layers.items():
        if key in now["layers"] and now["layers"][key] != value:
            problems.append(f"{key} {value}, this base has {now['layers'][key]}")
    if problems:
        message = f"the adapter in {where} was saved for a base with {'; '.join(problems)}"
        if not allow_mismatch:
            raise FlareError(f"{message}; pass allow_base_mismatch=True to load it anyway")
        warnings.warn(message, stacklevel=4)


def check_base_name(recorded: Any, backbone: nn.Module, where: str, allow_mismatch: bool) -> None:
    """The name the adapter was saved for against the base model's (a warning), once the adapter
    has loaded: an adapter that does not fit at all gets its one error line, not a warning too."""
    if not isinstance(recorded, dict):
        return
    saved_name, name = recorded.get("name_or_path"), base_identity(backbone)["name_or_path"]
    if (
        not allow_mismatch and isinstance(saved_name, str) and saved_name and name
        and short_name(saved_name) != short_name(name)
    ):
        warnings.warn(
            f"the adapter in {where} was saved for the base model {saved_name!r}, and is loading onto {name!r}; "
            "pass allow_base_mismatch=True if that is meant",
            stacklevel=4,
        )
