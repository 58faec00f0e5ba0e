"""generate() with a source: the checks made before the first step.

Each step pairs its positions exactly as a forward pass over the prompt and the tokens generated
so far would (model.py tracks where a cached step's tokens sit). matmul, matmul_relu and the
paper's cross-attention read every earlier target position, which a cached decoding step does
not have; without a cache every step recomputes the whole sequence, which is exact.
"""

from __future__ import annotations

import torch

from flare.adapter.config import FlareConfig
from flare.adapter.fusion import TARGET_KEYED
from flare.errors import FlareError


def uses_cache(default_config, args: tuple, kwargs: dict) -> bool:
    """Whether generate() will cache: the use_cache keyword, else the GenerationConfig passed
    (by name or as generate's second positional argument), else the model's own."""
    if "use_cache" in kwargs:
        return kwargs["use_cache"] is not False
    config = kwargs.get("generation_config")
    if config is None and len(args) > 1:
        config = args[1]
    if config is None:
        config = default_config
    return getattr(config, "use_cache", True) is not False


def check_cached_decoding(
    config: FlareConfig, use_cache: bool, right_aligned: bool, source_length: torch.Tensor, prompt_length: torch.Tensor
) -> None:
    """Refuse, before generating, a cached run in which a generated token would fuse with a
    fusion that reads earlier target positions. Lengths are each row's real tokens (B,)."""
    if not use_cache or config.fusion not in TARGET_KEYED:
        return
    if config.decode_fusion == "last":
        reason = "decode_fusion='last' fuses every generated token"
    elif right_aligned or not bool((source_length > prompt_length).any()):
        return  # every generated token sits past the English prompt's end: no partner
    else:
        reason = "an English prompt is longer than its target prompt, so generated tokens have partners"
    raise FlareError(
        f"fusion={config.fusion!r} reads all earlier target positions, which cached generation steps lack, and "
        f"{reason}: generate with use_cache=False (exact), or use decode_fusion='none' with right alignment"
    )
