"""Fusion functions phi(S, T) on LoRA bottlenecks: S = A x_source, T = A x_target, both (B, L, r).

S arrives already paired position by position with T (see pairing.py), so every fusion returns a
(B, L, r) tensor that lora_B maps back to the model width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossAttentionFusion(nn.Module):
    """Multi-head attention inside the bottleneck: queries from the source, keys and values from
    the target (as in the paper), inner width r, no output projection: 3 (r*r + r) parameters."""

    def __init__(self, r: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(r, r)
        self.k = nn.Linear(r, r)
        self.v = nn.Linear(r, r)

    def forward(self, source: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, r = source.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, x.shape[1], self.heads, r // self.heads).transpose(1, 2)

        q, k, v = split(self.q(source)), split(self.k(target)), split(self.v(target))
        mask = None
        if target_mask is not None:  # target padding never serves as a key
            mask = target_mask[:, None, None, :].to(torch.bool)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return out.transpose(1, 2).reshape(batch, length, r)


def make_fusion_module(fusion: str, r: int, heads: int, dropout: float) -> nn.Module | None:
    """The trainable part of a fusion, if it has one (only cross_attention does)."""
    return CrossAttentionFusion(r, heads, dropout) if fusion == "cross_attention" else None


def fuse(
    fusion: str,
    source: torch.Tensor,
    target: torch.Tensor,
    target_mask: torch.Tensor | None = None,
    module: nn.Module | None = None,
) -> torch.Tensor:
    """phi(source, target). target_mask (B, L) marks real target tokens; the sequence-mixing
    fusions (matmul, cross_attention) ignore target padding."""
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
    if fusion == "cross_attention":
        assert module is not None, "cross_attention needs its fusion module"
        return module(source, target, target_mask)
    raise ValueError(f"unknown fusion {fusion!r}")

