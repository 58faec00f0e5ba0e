"""Which source position each target position fuses with.

Tokens pair by position as if both sides were padded to a common length: with left alignment
(what right padding gives) position i pairs with position i; with right alignment (what left
padding gives) the last positions pair. A target position whose partner is missing (past the
end of a shorter source) or is source padding (with mask_source_padding) runs plain LoRA. So the
caller controls pairing through its layout: a decoder batch can leave masked source positions
under the target's answer tokens, which keeps the prompts aligned in training as at test time.
"""

from __future__ import annotations

import torch


def is_left_padded(mask: torch.Tensor | None) -> bool:
    """True when some row starts with padding, i.e. the tokenizer padded on the left."""
    return mask is not None and mask.shape[1] > 0 and bool((mask[:, 0] == 0).any())


def is_right_padded(mask: torch.Tensor | None) -> bool:
    return mask is not None and mask.shape[1] > 0 and bool((mask[:, -1] == 0).any())


def pair_positions(
    source_length: int, target_length: int, right_aligned: bool, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """index (Lt,) of each target position's source partner, and whether it exists (Lt,)."""
    offset = source_length - target_length if right_aligned else 0
    index = torch.arange(target_length, device=device) + offset
    exists = (index >= 0) & (index < source_length)
    return index.clamp(0, source_length - 1), exists


def pack(states: torch.Tensor, mask: torch.Tensor, right_aligned: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real positions to the aligned end, keeping their order, e.g. to pair
    right-padded MT encoder states with a left-padded decoder prompt."""
    # a stable sort on "is padding" (left) or "is real" (right) moves one group to the end,
    # each group's order intact
    key = (mask != 0) if right_aligned else (mask == 0)
    order = torch.sort(key.to(torch.uint8), dim=1, stable=True).indices
    packed = states.gather(1, order[..., None].expand(-1, -1, states.shape[-1]))
    return packed, mask.gather(1, order)


def last_real(states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The state of each row's last real token: (B, 1, d)."""
    if mask is None or mask.shape[1] != states.shape[1]:
        return states[:, -1:]
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, -1).amax(1).clamp(min=0)
    return states[torch.arange(states.shape[0], device=states.device), last][:, None]
