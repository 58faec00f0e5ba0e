"""Loading a backbone for a task, building the adapter of each method, merging stage 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from flare.adapter import FlareConfig, FlareModel, get_flare_model
from flare.device import Placement, resolve_placement
from flare.errors import FlareError
from flare.formats import Family, model_family
from flare.settings import AdapterSettings
from flare.tasks import Task


def resolve(model: str) -> str:
    """A model id, local path, or alias resolved to something transformers can load offline."""
    try:
        from flare.models import resolve_model
    except ImportError:  # pragma: no cover - models.py ships with the package
        return model
    return resolve_model(model)


def load_backbone(
    model: str, task: Task, load_in_4bit: bool = False, device: str = "auto", seed: int | None = None,
    dtype: str = "auto", placement: Placement | None = None, family: Family | None = None,
) -> tuple[torch.nn.Module, Any, Family]:
    """The task model and its tokenizer, built on its device in its dtype (flare/device.py; a
    ready `placement` replaces load_in_4bit, device and dtype). A head the checkpoint lacks starts
    random: `seed` makes that initialisation reproducible. `family` overrides the inferred one."""
    placement = placement or resolve_placement(device, dtype, load_in_4bit)
    path = resolve(model)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise FlareError(f"model {model}: cannot load a config ({str(error).splitlines()[0]})") from None
    family = model_family(config, family)
    kwargs = placement.from_pretrained_kwargs()
    if family == "encoder":
        if task.type == "qa":
            backbone = AutoModelForQuestionAnswering.from_pretrained(path, **kwargs)
        else:
            backbone = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(task.labels), **kwargs)
    elif family == "decoder":
        backbone = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    else:
        backbone = AutoModelForSeq2SeqLM.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if family == "decoder":
        tokenizer.padding_side = "left"
    if getattr(backbone.config, "pad_token_id", None) is None:
        backbone.config.pad_token_id = tokenizer.pad_token_id
    return backbone, tokenizer, family


def flare_config(
    settings: AdapterSettings, task: Task, family: Family, fusion: str = "add_relu", source_dim: int | None = None
) -> FlareConfig:
    """The adapter of one method. The task head trains with it (PEFT's modules_to_save)."""
    task_type, modules_to_save = None, None
    if family == "encoder" and task.type == "classification":
        task_type = "SEQ_CLS"  # PEFT trains and saves the classifier head
    elif family == "encoder":
        modules_to_save = ["qa_outputs"]
    elif family == "decoder":
        task_type = "CAUSAL_LM"
    else:
        task_type = "SEQ_2_SEQ_LM"
    return FlareConfig(
        r=settings.r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
        target_modules=settings.target_modules or None, fuse_modules=settings.fuse_modules or None,
        fusion=fusion, source_dim=source_dim,
        source_position=settings.source_position, decode_fusion=settings.decode_fusion,
        cross_attention_heads=settings.cross_attention_heads, task_type=task_type, modules_to_save=modules_to_save,
        # the formatter pads decoders on the left and everything else on the right
        alignment="right" if family == "decoder" else "left",
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
    when it loads it."""
    from flare.adapter import load_flare_model
    from flare.files import atomic_dir

    with atomic_dir(directory) as staging:
        if getattr(model.backbone, "is_loaded_in_4bit", False):
            if original is None or task is None:
                raise FlareError("merging into a 4-bit base needs the original model and task")
            model.save_pretrained(staging / "adapter")
            device = next(model.parameters()).device
            full, _, _ = load_backbone(original, task, placement=Placement(device, torch.float32), family=family)
            merged = load_flare_model(full, staging / "adapter").peft_model.merge_and_unload()
            import shutil

            shutil.rmtree(staging / "adapter")
        else:
            merged = model.peft_model.merge_and_unload()
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
