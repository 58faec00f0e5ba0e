"""Fusion functions phi(S, T) on LoRA bottlenecks: S = A x_source, T = A x_target, both (B, L, r).

S arrives already paired position by position with T (see pairing.py), so every fusion returns a
(B, L, r) tensor that lora_B maps back to the model width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flare.adapter.config import CROSS_ATTENTION_QUERIES


class CrossAttentionFusion(nn.Module):
    """Multi-head attention inside the bottleneck, inner width r, no output projection:
    3 (r*r + r) parameters. queries="source" is the paper's: queries from the English side, keys
    and values from the target, so the English side only weighs target content. queries="target"
    swaps the roles, so each target token reads English content."""

    def __init__(self, r: int, heads: int, dropout: float, queries: str = "source") -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.queries = queries
        self.q = nn.Linear(r, r)
        self.k = nn.Linear(r, r)
        self.v = nn.Linear(r, r)

    def forward(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        target_mask: torch.Tensor | None,
        source_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, length, r = source.shape
        if self.queries == "source":
            query, keys, key_mask = source, target, target_mask
        else:
            query, keys, key_mask = target, source, source_mask

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, x.shape[1], self.heads, r // self.heads).transpose(1, 2)

        q, k, v = split(self.q(query)), split(self.k(keys)), split(self.v(keys))
        mask = None
        if key_mask is not None:  # padding never serves as a key
            mask = key_mask.to(torch.bool)
            # a row without any real key would softmax over nothing (NaN, also in the backward
            # pass); the caller discards such rows, so let them attend to everything instead
            mask = (mask | ~mask.any(-1, keepdim=True))[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return out.transpose(1, 2).reshape(batch, length, r)


def make_fusion_module(fusion: str, r: int, heads: int, dropout: float) -> nn.Module | None:
    """The trainable part of a fusion, if it has one (only the cross-attention fusions do)."""
    queries = CROSS_ATTENTION_QUERIES.get(fusion)
    return None if queries is None else CrossAttentionFusion(r, heads, dropout, queries)


def fuse(
    fusion: str,
    source: torch.Tensor,
    target: torch.Tensor,
    target_mask: torch.Tensor | None = None,
    module: nn.Module | None = None,
    source_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """phi(source, target). target_mask (B, L) marks real target tokens and source_mask (B, L)
    source positions that are real and paired; the sequence-mixing fusions (matmul and the
    cross-attentions) never read padding as keys."""
    if fusion == "add":
        return source + target
    if fusion == "mul":
        return source * target
    if fusion == "add_relu":
        return F.relu(source) + F.relu(target)
    if fusion in ("matmul", "matmul_relu"):
        if fusion == "matmul_relu":
            source, target = F.relu(source), F.relu(target)
        if target_mask is not None:
            target = target * target_mask[..., None].to(target.dtype)
        # S (T^T T) equals (S T^T) T but costs O(L r^2) instead of O(L^2 r).
        return source @ (target.transpose(1, 2) @ target)
    if fusion in CROSS_ATTENTION_QUERIES:
        assert module is not None, f"{fusion} needs its fusion module"
        return module(source, target, target_mask, source_mask)
    raise ValueError(f"unknown fusion {fusion!r}")

