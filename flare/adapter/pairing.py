"""Which source position each target position fuses with.

Pairing is per row and reads only the row's own masks, so an example pairs the same way whatever
its batchmates are and however much padding either side carries:
* left alignment: the first real target token pairs with the first real source token, and so on;
* right alignment: the target's last real token pairs with the source row's last position.
  Under right alignment a source row's trailing masked positions are kept as positions: they
  stand under the target's answer tokens (see formats.py), which keeps the prompt ends paired in
  training as at generation. Pad the source on the left for right alignment.
A target position whose partner is missing (outside the source) or is source padding (with
mask_source_padding) runs plain LoRA.
"""

from __future__ import annotations

import torch


def row_extent(mask: torch.Tensor | None, batch: int, length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's first real position and one past its last real one, (B,) each. Without a
    mask every position is real; a row without any real position gets (length, 0)."""
    if mask is None:
        return (torch.zeros(batch, dtype=torch.long, device=device),
                torch.full((batch,), length, dtype=torch.long, device=device))
    real = mask.bool()
    positions = torch.arange(real.shape[1], device=real.device).expand_as(real)
    first = torch.where(real, positions, real.shape[1]).amin(1)
    end = torch.where(real, positions + 1, 0).amax(1)
    return first, end


def partners(
    positions: torch.Tensor,
    target_first: torch.Tensor,
    target_end: torch.Tensor,
    source_first: torch.Tensor,
    source_length: int,
    right_aligned: bool,
) -> torch.Tensor:
    """Source index (B, L) of each target position (positions (L,), absolute within the row);
    it may fall outside [0, source_length), where there is no partner."""
    if right_aligned:
        return positions[None] - target_end[:, None] + source_length
    return positions[None] - target_first[:, None] + source_first[:, None]


def pack(states: torch.Tensor, mask: torch.Tensor, right_aligned: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real positions to the aligned end, keeping their order, e.g. to pair
    right-padded MT encoder states with a left-padded prompt."""
    # a stable sort on "is padding" (left) or "is real" (right) moves one group to the end,
    # each group's order intact
    key = (mask != 0) if right_aligned else (mask == 0)
    order = torch.sort(key.to(torch.uint8), dim=1, stable=True).indices
    packed = states.gather(1, order[..., None].expand(-1, -1, states.shape[-1]))
    return packed, mask.gather(1, order)
