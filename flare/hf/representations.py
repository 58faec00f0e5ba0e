"""Sentence representations per layer, for `flare analyze`: each parallel pair's target side and
English side, mean-pooled over real tokens (flare/hf/alignment.py), for every hidden layer (0 is
the embedding output).

How each kind of model reads the two sides (`Reading`):
* "plain": the model reads the target text and, separately, the English text (the base model,
  or a LoRA-adapted model: its adapter acts on both, as it would on any input);
* "fused": a FLARE model's fused path: the target text is read with its English translation fused
  in every fused module, and the English side is what FLARE itself fuses: the English text through
  the frozen backbone with the adapters off.
Both sides are the formatter's (flare/hf/formats.py): the same template, truncation and padding the
study's scoring uses, so the English side is paired with the target exactly as in scoring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Literal

import torch
from tqdm.auto import tqdm

from flare.data.examples import Pair
from flare.errors import FlareError
from flare.hf.alignment import mean_pool
from flare.hf.device import autocast, autocast_dtype, model_device
from flare.hf.formats import PairFormatter

Reading = Literal["plain", "fused"]


def _hidden_states(output) -> tuple[torch.Tensor, ...]:
    states = getattr(output, "hidden_states", None)
    if states is None:
        raise FlareError("the model returned no hidden states (encoder-decoder backbones are not analysed)")
    return states


@torch.no_grad()
def layer_representations(
    model: torch.nn.Module, formatter: PairFormatter, pairs: Sequence[Pair], reading: Reading,
    batch_size: int = 32, description: str = "represent",
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(target, English): per layer, an (N, d) float32 CPU matrix of the pairs' sentence vectors."""
    if formatter.view != "flare":
        raise FlareError("layer_representations needs the formatter's 'flare' view (both sides of each pair)")
    if formatter.spec.family == "encoder-decoder":
        raise FlareError("flare analyze reads encoder and decoder-only backbones, not encoder-decoders")
    model.eval()
    device, amp = model_device(model), autocast_dtype(model)
    targets: list[list[torch.Tensor]] = []
    englishes: list[list[torch.Tensor]] = []
    items = list(pairs)
    bar = tqdm(total=len(items), desc=description, leave=False, dynamic_ncols=True)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = {k: v.to(device) for k, v in formatter.collate(formatter.features(chunk, train=False)).items()}
        target = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        english = {k[len("source_"):]: v for k, v in batch.items() if k.startswith("source_")}
        with autocast(device, amp):
            if reading == "fused":
                fused = {**target, **{f"source_{k}": v for k, v in english.items()}}
                target_states = _hidden_states(model(**fused, output_hidden_states=True))
                adapters_off = model.peft_model.disable_adapter()
            else:
                target_states = _hidden_states(model(**target, output_hidden_states=True))
                adapters_off = contextlib.nullcontext()
            with adapters_off:
                english_states = _hidden_states(model(**english, output_hidden_states=True))
        targets.append([mean_pool(h, target["attention_mask"]).cpu() for h in target_states])
        englishes.append([mean_pool(h, english["attention_mask"]).cpu() for h in english_states])
        bar.update(len(chunk))
    bar.close()
    layers = len(targets[0])
    return ([torch.cat([b[i] for b in targets]) for i in range(layers)],
            [torch.cat([b[i] for b in englishes]) for i in range(layers)])
