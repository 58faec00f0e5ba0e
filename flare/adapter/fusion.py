"""Fusion functions phi(S, T) on LoRA bottlenecks: S = A x_source (B, Ls, r), T = A x_target (B, L, r).

Each target position i has a partner source position index[i] (see pairing.py). The element-wise
fusions combine T_i with S_index[i]; matmul and the cross-attentions mix positions, and read only:
* real tokens (padding is never a key);
* when causal (decoder-only models): target positions j <= i and source positions up to
  index[i], so the output at i never depends on a later token, as in the causal model itself.
Every fusion returns (B, L, r), which lora_B maps back to the model width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flare.adapter.config import CROSS_ATTENTION_QUERIES

ELEMENTWISE = ("add", "mul", "add_relu")
# The fusions that read other target positions: a cached decoding step does not have them.
TARGET_KEYED = ("matmul", "matmul_relu", "cross_attention")


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

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Lq, r) attends to keys (B, Lk, r); mask (B, Lq, Lk) marks the allowed keys."""
        batch, length, r = query.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, x.shape[1], self.heads, r // self.heads).transpose(1, 2)

        q, k, v = split(self.q(query)), split(self.k(keys)), split(self.v(keys))
        if mask is not None:
            # a query without any allowed key would softmax over nothing (NaN, also in the
            # backward pass); the caller discards such positions, so let them attend to everything
            mask = (mask | ~mask.any(-1, keepdim=True))[:, None]
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
    index: torch.Tensor,
    target_keys: torch.Tensor | None = None,
    source_keys: torch.Tensor | None = None,
    causal: bool = False,
    module: nn.Module | None = None,
) -> torch.Tensor:
    """phi(S, T) at every target position. index (B, L) is each target position's partner in
    [0, Ls); target_keys (B, L) and source_keys (B, Ls) mark the positions that may serve as
    keys (None: all); causal limits the keys of position i as the module docstring says."""
    paired = source.gather(1, index[..., None].expand(-1, -1, source.shape[-1]))
    if fusion == "add":
        return paired + target
    if fusion == "mul":
        return paired * target
    if fusion == "add_relu":
        return F.relu(paired) + F.relu(target)
    length = target.shape[1]
    allowed = torch.ones(target.shape[0], length, length, dtype=torch.bool, device=target.device)
    if target_keys is not None:
        allowed = allowed & target_keys.bool()[:, None, :]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=target.device).tril()
    if fusion in ("matmul", "matmul_relu"):
        if fusion == "matmul_relu":
            paired, target = F.relu(paired), F.relu(target)
        if not causal:
            if target_keys is not None:
                target = target * target_keys[..., None].to(target.dtype)
            # S (T^T T) equals (S T^T) T but costs O(L r^2) instead of O(L^2 r).
            return paired @ (target.transpose(1, 2) @ target)
        return ((paired @ target.transpose(1, 2)) * allowed.to(target.dtype)) @ target
    if fusion in CROSS_ATTENTION_QUERIES:
        assert module is not None, f"{fusion} needs its fusion module"
        if CROSS_ATTENTION_QUERIES[fusion] == "source":
            return module(paired, target, allowed)
        keys = torch.ones(source.shape[:2], dtype=torch.bool, device=source.device)
        keys = keys if source_keys is None else source_keys.bool()
        allowed = keys[:, None, :].expand(-1, length, -1)
        if causal:
            positions = torch.arange(source.shape[1], device=source.device)
            allowed = allowed & (positions[None, None, :] <= index[..., None])
        return module(target, source, allowed)
    raise ValueError(f"unknown fusion {fusion!r}")
