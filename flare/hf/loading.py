"""Loading a backbone for a task, building the adapter of each method, merging stage 1."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer

from flare.adapter import FlareConfig, FlareModel, get_flare_model, load_flare_model
from flare.adapter.io import save_flare
from flare.adapter.sharding import gathered_adapter_state, is_main_process, is_sharded, wait_for_everyone
from flare.data.tasks import Task
from flare.errors import FlareError, first_line
from flare.files import atomic_dir
from flare.hf.backbone import Family, model_family, spec_for
from flare.hf.device import Placement, resolve_placement
from flare.hf.offline_e5 import model_location


def load_backbone(
    model: str, task: Task, load_in_4bit: bool = False, device: str = "auto", seed: int | None = None,
    dtype: str = "auto", placement: Placement | None = None, family: Family | None = None,
) -> tuple[torch.nn.Module, Any, Family]:
    """The task model and its tokenizer, built on its device in its dtype (flare/hf/device.py; a
    ready `placement` replaces load_in_4bit, device and dtype). A head the checkpoint lacks starts
    random: `seed` makes that initialisation reproducible. `family` overrides the inferred one.
    The family returned keys the BackboneSpec (flare/hf/backbone.py) the formatter and adapter read."""
    placement = placement or resolve_placement(device, dtype, load_in_4bit)
    path = model_location(model)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise FlareError(f"model {model}: cannot load a config ({first_line(error)})") from None
    spec = spec_for(model_family(config, family), task.type)
    kwargs = {**placement.from_pretrained_kwargs(), **spec.head_config(len(task.labels))}
    backbone = spec.model_class().from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = spec.padding_side
    if getattr(backbone.config, "pad_token_id", None) is None:
        backbone.config.pad_token_id = tokenizer.pad_token_id
    return backbone, tokenizer, spec.family


def flare_config(
    adapter: Mapping[str, Any], task: Task, family: Family, fusion: str = "add_relu", source_dim: int | None = None
) -> FlareConfig:
    """The adapter of one method: the study's adapter settings (`AdapterSettings.flare_kwargs()`)
    plus what the backbone decides. The task head trains with it (PEFT's modules_to_save)."""
    spec = spec_for(family, task.type)  # the same spec the loader and the formatter read
    return FlareConfig(
        **adapter, fusion=fusion, source_dim=source_dim, task_type=spec.peft_task_type,
        modules_to_save=list(spec.modules_to_save) or None, alignment=spec.alignment,
    )


def adapt(backbone: torch.nn.Module, config: FlareConfig) -> FlareModel:
    """The adapter on a backbone. Every trainable weight is float32 whatever the base's dtype:
    PEFT keeps LoRA in float32, and the task head it trains (modules_to_save) gets the same, so
    AdamW never updates bfloat16 weights (their 8-bit mantissa swallows small steps)."""
    model = get_flare_model(backbone, config)
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    return model


def merge_and_save(
    model: FlareModel, tokenizer: Any, directory: Path, original: str | None = None, task: Task | None = None,
    family: Family | None = None,
) -> None:
    """Merge a trained LoRA into its base (W <- W + s B A) and save the English task model.

    A 4-bit base is not merged in place: that would de-quantise, add and re-quantise (PEFT's
    merge), adding a second rounding on top of the first and tying the saved model to
    bitsandbytes. Instead the adapter goes onto a float32 copy of the `original` weights (on the
    4-bit model's device), merges exactly, and is saved in float32; stage 2 quantises it once
    when it loads it.

    A base sharded with FSDP2 (call this on every process) is merged the same way: the adapter
    is gathered, and the first process merges it into the `original` weights loaded on the CPU
    in the base's dtype, while the others wait."""
    sharded = is_sharded(model)
    four_bit = getattr(model.backbone, "is_loaded_in_4bit", False)
    if (four_bit or sharded) and (original is None or task is None):
        raise FlareError("merging into a 4-bit or sharded base needs the original model and task")
    adapter_state = gathered_adapter_state(model) if sharded else None  # a collective: every process
    if is_main_process():
        with atomic_dir(directory) as staging:
            if four_bit or sharded:
                save_flare(model, staging / "adapter", state_dict=adapter_state)
                if sharded:
                    placement = Placement(torch.device("cpu"), next(model.backbone.parameters()).dtype)
                else:
                    placement = Placement(next(model.parameters()).device, torch.float32)
                full, _, _ = load_backbone(original, task, placement=placement, family=family)
                merged = load_flare_model(full, staging / "adapter").peft_model.merge_and_unload()
                shutil.rmtree(staging / "adapter")
            else:
                merged = model.peft_model.merge_and_unload()
            merged.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
    wait_for_everyone()
