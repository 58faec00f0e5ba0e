"""Saving and loading FLARE adapters.

A saved directory is a valid PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors,
loadable by peft.PeftModel.from_pretrained as plain LoRA) plus two sidecar files:
flare_config.json (the FlareConfig and the fused module names) and, when the fusion or FLARE-MT
has weights, flare_weights.safetensors. Nothing is pickled, and pickled adapters are refused.
Files are written to a temporary directory first and moved into place one by one, the config
last, so an interrupted save never leaves a directory that loads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from peft import PeftModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from flare.adapter.config import FlareConfig
from flare.adapter.model import FlareModel
from flare.errors import FlareError

CONFIG_FILE = "flare_config.json"
WEIGHTS_FILE = "flare_weights.safetensors"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 1


def save_flare(model: FlareModel, directory: str | os.PathLike, **peft_kwargs: Any) -> None:
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.saving-", dir=directory.parent))
    try:
        model.peft_model.save_pretrained(staging, safe_serialization=True, **peft_kwargs)
        weights = model.flare_state_dict()
        if weights:
            save_file(weights, staging / WEIGHTS_FILE, metadata={"format": "pt"})
        meta = {
            "format_version": FORMAT_VERSION,
            "config": model.flare_config.to_dict(),
            "fused_modules": model.fused_modules,
        }
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        directory.mkdir(exist_ok=True)
        (directory / CONFIG_FILE).unlink(missing_ok=True)  # the directory is incomplete until the end
        if not weights:
            (directory / WEIGHTS_FILE).unlink(missing_ok=True)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_FILE):
            os.replace(path, directory / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_adapter_dir(directory: str | os.PathLike) -> tuple[FlareConfig, list[str]]:
    """The config and fused modules of a saved adapter, after checking (without loading any base
    model) that its files are there, readable and safetensors: a FlareError names what is wrong."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FlareError(f"{directory} is not a FLARE adapter directory ({CONFIG_FILE} is missing)")
    if not (directory / PEFT_WEIGHTS_FILE).is_file():
        raise FlareError(f"{directory} has no {PEFT_WEIGHTS_FILE}; only safetensors adapters are loaded, never pickles")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        config = FlareConfig.from_dict(meta["config"])
        fused = list(meta["fused_modules"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise FlareError(f"{config_path} is corrupt: {error}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise FlareError(
            f"{config_path} has format_version {meta.get('format_version')}; this flare-xlt reads {FORMAT_VERSION}"
        )
    for name in (PEFT_WEIGHTS_FILE, WEIGHTS_FILE):
        if (directory / name).is_file():
            try:
                with safe_open(directory / name, framework="pt"):
                    pass
            except (OSError, SafetensorError) as error:
                raise FlareError(
                    f"cannot load the adapter in {directory}: cannot read {name} as safetensors ({error})"
                ) from None
    return config, fused


def load_flare_model(base_model: nn.Module, directory: str | os.PathLike, is_trainable: bool = False) -> FlareModel:
    """Put a saved FLARE adapter on base_model (the same base it was trained on)."""
    directory = Path(directory)
    config, fused = check_adapter_dir(directory)
    try:
        peft_model = PeftModel.from_pretrained(base_model, directory, is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError, OSError, SafetensorError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        # torch's "Error(s) in loading state_dict for ...:" header says nothing; the next line names the problem
        first = lines[1] if lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1 else lines[0]
        hint = " (an adapter saved for another base model?)" if "size mismatch" in first else ""
        raise FlareError(
            f"cannot load the adapter in {directory} onto {type(base_model).__name__}: {first}{hint}"
        ) from None
    missing = [name for name in fused if name not in dict(peft_model.base_model.model.named_modules())]
    if missing:
        raise FlareError(f"the adapter in {directory} fuses modules this base model lacks: {missing[:3]}")
    model = FlareModel(peft_model, config, fused)
    expected = model.flare_state_dict()
    if expected:
        try:
            weights = load_file(directory / WEIGHTS_FILE)
        except (OSError, SafetensorError) as error:
            raise FlareError(f"cannot read {directory / WEIGHTS_FILE}: {error}") from None
        wrong = sorted(k for k in expected if k not in weights or weights[k].shape != expected[k].shape)
        if wrong or set(weights) - set(expected):
            raise FlareError(
                f"{directory / WEIGHTS_FILE} does not match this adapter "
                f"(first mismatch: {(wrong or sorted(set(weights) - set(expected)))[0]})"
            )
        model.load_state_dict(weights, strict=False)
    for parameter in model.fusion_modules.parameters():
        parameter.requires_grad_(is_trainable)
    if model.source_projection is not None:
        model.source_projection.requires_grad_(is_trainable)
    return model
