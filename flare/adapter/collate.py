"""Batching the English side with any data collator (transformers' or TRL's), which would
otherwise drop or fail on the source_* columns of a tokenized dataset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from flare.adapter.model import FlareModel
from flare.errors import FlareError


class SourceCollator:
    """Wrap a data collator: each example's source_* fields (source_input_ids, and optionally
    source_attention_mask, source_token_type_ids, source_states) are padded to the batch's longest
    English side, on padding_side, and source_attention_mask is made when absent; the other fields
    go to the wrapped collator unchanged. A batch without source fields is an error, never a
    silent plain-LoRA step.

    padding_side: "left" for decoder-only models (FLARE pairs the ends of decoder rows, so the
    English side ends where the target ends), "right" for encoders and encoder-decoders (the
    first positions pair); see FlareConfig.alignment.

    model: the model the batches are for. Anything but a FlareModel is refused here: a plain
    transformers or PEFT model takes the source_* arguments into its **kwargs and ignores them,
    so training would silently be plain LoRA (or plain fine-tuning).
    """

    def __init__(
        self, collator: Callable[[list[dict]], dict], pad_token_id: int, padding_side: str, model: Any = None
    ) -> None:
        if model is not None and not isinstance(model, FlareModel):
            raise FlareError(
                f"SourceCollator: the model is a {type(model).__name__}, not a FlareModel, and would ignore the "
                "English side; build it with flare.get_flare_model or flare.load_flare_model"
            )
        if padding_side not in ("left", "right"):
            raise FlareError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if not isinstance(pad_token_id, int):
            raise FlareError(f"pad_token_id must be an int, got {pad_token_id!r}")
        self.collator = collator
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = {k for k in examples[0] if k.startswith("source_")}
        for index, example in enumerate(examples):
            mine = {k for k in example if k.startswith("source_")}
            if mine != keys:
                raise FlareError(
                    f"example {index} has source fields {sorted(mine)}, example 0 has {sorted(keys)}; "
                    "every example of a batch needs the same English-side fields"
                )
        if not keys:
            raise FlareError(
                "the batch has no source_* fields: were the English columns dropped before batching? Trainer "
                "drops them when the model is not a FlareModel (its forward names no source_* argument), TRL's "
                "SFTTrainer unless remove_unused_columns=False"
            )
        batch = self.collator([{k: v for k, v in e.items() if not k.startswith("source_")} for e in examples])
        main = "source_input_ids" if "source_input_ids" in keys else "source_states"
        if main not in keys:
            raise FlareError(f"source fields {sorted(keys)} without source_input_ids or source_states")
        rows = [torch.as_tensor(e[main]) for e in examples]
        lengths = [len(row) for row in rows]
        if "source_attention_mask" not in keys:
            keys.add("source_attention_mask")
            examples = [{**e, "source_attention_mask": [1] * n} for e, n in zip(examples, lengths)]
        for key in sorted(keys):
            tensors = [torch.as_tensor(e[key]) for e in examples]
            if any(len(t) != n for t, n in zip(tensors, lengths)):
                raise FlareError(f"{key} and {main} differ in length in an example")
            value = self.pad_token_id if key == "source_input_ids" else 0
            batch[key] = torch.stack([self._pad(t, max(lengths), value) for t in tensors])
        return batch

    def _pad(self, row: torch.Tensor, length: int, value: float) -> torch.Tensor:
        filler = torch.full((length - len(row), *row.shape[1:]), value, dtype=row.dtype)
        parts = (filler, row) if self.padding_side == "left" else (row, filler)
        return torch.cat(parts)
