"""Building a FlareModel on a base model: a fresh adapter (get_flare_model) or a saved one
(load_flare_model; io.py reads the files)."""

from __future__ import annotations

import os
import re

from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from flare.adapter.config import FlareConfig, default_fuse_modules, parse_layers
from flare.adapter.io import load_onto
from flare.adapter.model import FlareModel
from flare.errors import FlareError, first_line


def _linear_leaf_names(model: nn.Module) -> set[str]:
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    }


def _matches(name: str, patterns: list[str]) -> bool:
    return any(name == p or name.endswith("." + p) for p in patterns)


def get_flare_model(model: nn.Module, config: FlareConfig | None = None, adapter_name: str = "default") -> FlareModel:
    """Add a fresh FLARE adapter (B = 0, so the output starts equal to the base model's)."""
    config = config or FlareConfig()
    if isinstance(model, (PeftModel, FlareModel)):
        raise FlareError("model already carries a PEFT adapter; merge it (merge_and_unload) or pass the base model")
    model_name = type(model).__name__
    leaves = _linear_leaf_names(model)
    fuse_names = config.fuse_modules or default_fuse_modules(leaves, model_name)
    targets = config.target_modules if config.target_modules is not None else list(fuse_names)
    module_names = [n for n, _ in model.named_modules()]
    # PEFT only objects when no target matches at all; a typo in one name must not pass silently.
    for setting, names in (
        ("target_modules", targets if isinstance(targets, list) else []), ("fuse_modules", fuse_names)
    ):
        unknown = [p for p in names if not any(_matches(n, [p]) for n in module_names)]
        if unknown:
            raise FlareError(f"{setting} {unknown} match no module of {model_name}")
    if isinstance(targets, list):
        untargeted = [
            f for f in fuse_names if not any(f == t or f.endswith("." + t) or t.endswith("." + f) for t in targets)
        ]
        if untargeted:
            raise FlareError(
                f"fuse_modules {untargeted} are not among target_modules {targets}; fused modules need LoRA"
            )
    try:  # PEFT checks its own settings (task_type, ...) here
        lora = LoraConfig(
            r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=targets, modules_to_save=config.modules_to_save, task_type=config.task_type, bias="none",
        )
    except (ValueError, TypeError) as error:
        raise FlareError(f"PEFT refuses these LoRA settings: {first_line(error)}") from None
    try:
        peft_model = get_peft_model(model, lora, adapter_name=adapter_name)
    except ValueError as error:
        raise FlareError(
            f"target_modules {targets!r} match no module of {model_name}: {first_line(error)}"
        ) from None
    except (TypeError, re.error) as error:  # a target_modules regex that does not compile, modules_to_save on a list
        raise FlareError(f"PEFT cannot apply these LoRA settings to {model_name}: {first_line(error)}") from None
    except AttributeError as error:  # e.g. task_type CAUSAL_LM on a model that does not generate
        raise FlareError(
            f"PEFT cannot wrap {model_name} as task_type {config.task_type!r}: {first_line(error)}"
        ) from None
    lora_layers = [n for n, m in peft_model.base_model.model.named_modules() if isinstance(m, LoraLayer)]
    fused = [n for n in lora_layers if _matches(n, list(fuse_names))]
    if not fused:
        raise FlareError(f"fuse_modules {list(fuse_names)} match no LoRA-targeted module of {model_name}")
    layers = parse_layers(config.fuse_layers)
    if layers is not None:
        fused = _in_layers(fused, layers, model_name)
    return FlareModel(peft_model, config, fused)


def layer_index(module_name: str) -> int | None:
    """The layer a module sits in: the first number in its dotted name ("model.layers.3.mlp" -> 3,
    T5's "encoder.block.3.layer.0.SelfAttention.q" -> 3)."""
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", module_name)
    return None if match is None else int(match.group(1))


def _in_layers(fused: list[str], layers: list[int], model_name: str) -> list[str]:
    """The fused modules of the given layers; a layer the model does not have is refused."""
    indices = [layer_index(name) for name in fused]
    if None in indices:
        raise FlareError(f"fuse_layers: {fused[indices.index(None)]} of {model_name} is not inside a numbered layer")
    depth = max(indices) + 1
    beyond = [layer for layer in layers if layer >= depth]
    if beyond:
        raise FlareError(f"fuse_layers {beyond}: {model_name} has {depth} layers (0-{depth - 1})")
    return [name for name, index in zip(fused, indices) if index in layers]


def load_flare_model(
    base_model: nn.Module, directory: str | os.PathLike, is_trainable: bool = False, revision: str | None = None,
    adapter_name: str | None = None, allow_base_mismatch: bool = False,
) -> FlareModel:
    """Put a saved FLARE adapter (a folder, a Trainer checkpoint folder or a Hub model id) on
    base_model (the same base it was trained on), under the name it was saved with unless
    adapter_name says otherwise. As with PEFT, the model is in eval mode unless is_trainable.
    A base of another architecture or layer count than the one the adapter was saved for is
    refused, one of another name warned about; allow_base_mismatch=True loads it anyway."""
    return load_onto(FlareModel, base_model, directory, is_trainable, revision, adapter_name, allow_base_mismatch)
