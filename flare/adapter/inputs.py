"""Checks of the English-side arguments of FlareModel.forward and generate, made before the
English pass: what torch would turn into a raw IndexError or AttributeError deep inside the
backbone (a list, an id outside the vocabulary, a tensor on another device), and what would run
but fuse the wrong positions without a word (an additive 0/-inf mask, whose real tokens are the
zeros; English padding with no mask to say so)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from flare.errors import FlareError


def _tensor(value: Any, name: str, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    kind = type(value).__name__
    hint = "; wrap it: torch.tensor(...)" if isinstance(value, (list, tuple)) else ""
    raise FlareError(f"{name} must be a torch tensor of {what}, got a {kind}{hint}")


def _on(tensor: torch.Tensor, device: torch.device | None, name: str, where: str) -> None:
    if device is not None and tensor.device != device:
        raise FlareError(f"{name} is on {tensor.device}, {where} on {device}; move it there (.to({str(device)!r}))")


def check_ids(ids: Any, embeddings: nn.Module | None) -> torch.Tensor:
    """Token ids (batch, length) of the model's own tokenizer, on its embeddings' device."""
    ids = _tensor(ids, "source_input_ids", "token ids (batch, length)")
    if ids.dim() != 2:
        raise FlareError(f"source_input_ids must be 2-D (batch, length), got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise FlareError(f"source_input_ids must hold integer token ids, got dtype {ids.dtype}")
    if ids.dtype not in (torch.long, torch.int32):  # what an embedding takes; the values stay exact
        ids = ids.long()
    if ids.shape[1] == 0:
        raise FlareError("source_input_ids is empty (length 0); an English side needs at least one token")
    weight = getattr(embeddings, "weight", None)
    vocabulary = getattr(embeddings, "num_embeddings", None)
    _on(ids, weight.device if isinstance(weight, torch.Tensor) else None, "source_input_ids", "the model's embeddings")
    if vocabulary is not None and ids.device.type != "meta" and ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocabulary:
            bad = low if low < 0 else high
            raise FlareError(
                f"source_input_ids holds id {bad}, outside the model's vocabulary of {vocabulary} "
                "(ids of another tokenizer? another model's English goes in as source_states)"
            )
    return ids


def check_states(states: Any, projection: nn.Module | None) -> torch.Tensor:
    """External English states (batch, length, source_dim): finite floats on the projection's device."""
    states = _tensor(states, "source_states", "states (batch, length, source_dim)")
    if states.dim() != 3:
        raise FlareError(f"source_states must be 3-D (batch, length, source_dim), got shape {tuple(states.shape)}")
    if not states.dtype.is_floating_point:
        raise FlareError(f"source_states must be floating point, got dtype {states.dtype}")
    if states.shape[1] == 0:
        raise FlareError("source_states is empty (length 0); an English side needs at least one position")
    if projection is not None:
        _on(states, projection.weight.device, "source_states", "the source projection")
    if states.device.type != "meta" and states.numel() and not bool(torch.isfinite(states).all()):
        raise FlareError("source_states holds NaN or infinite values")
    return states


def check_mask(mask: Any, source: torch.Tensor) -> torch.Tensor:
    """A 0/1 (or bool) mask over the source, 1 for real tokens, returned as integers. An additive
    mask (0 for real tokens, -inf or a large negative number for padding) is refused: read as 0/1
    it would mark every real token as padding, and an all-zero one cannot be told from padding."""
    mask = _tensor(mask, "source_attention_mask", "0/1 values (batch, length)")
    if tuple(mask.shape) != tuple(source.shape[:2]):
        raise FlareError(
            f"source_attention_mask shape {tuple(mask.shape)} does not match the source {tuple(source.shape[:2])}"
        )
    _on(mask, source.device, "source_attention_mask", "the source")
    if mask.dtype == torch.bool or mask.device.type == "meta":
        return mask.long()
    if mask.dtype.is_complex or not bool(((mask == 0) | (mask == 1)).all()):
        odd = mask[(mask != 0) & (mask != 1)].flatten()[:1].tolist()
        raise FlareError(
            f"source_attention_mask must hold 1 (real token) and 0 (padding), found {odd[0] if odd else mask.dtype}; "
            "an additive mask (0 / -inf) converts with (mask == 0).long()"
        )
    return mask.long()


def pad_token_id(backbone: nn.Module) -> int | None:
    """The pad id the model's config or generation config names, if any."""
    for config in (getattr(backbone, "config", None), getattr(backbone, "generation_config", None)):
        value = getattr(config, "pad_token_id", None)
        if isinstance(value, int):
            return value
    return None


def check_unmasked_ids(ids: torch.Tensor, pad_id: int | None, warned: set) -> None:
    """source_input_ids without source_attention_mask: every position counts as a real token. Refused
    when the ids hold the pad id (that padding would fuse as English words); said once per model
    when the model names no pad id, since then nobody can tell."""
    if pad_id is None:
        if "no-pad-id" not in warned:
            warned.add("no-pad-id")
            warnings.warn(
                "source_input_ids without source_attention_mask, and the model names no pad token: every English "
                "position counts as a real token; pass source_attention_mask when the English side is padded",
                stacklevel=4,
            )
        return
    if ids.device.type != "meta" and bool((ids == pad_id).any()):
        raise FlareError(
            f"source_input_ids contain the pad id {pad_id} but no source_attention_mask was given, so that padding "
            "would fuse as English words; pass source_attention_mask (1: real token, 0: padding)"
        )
