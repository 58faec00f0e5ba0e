"""Middle-layer alignment (Liu & Niehues, ACL 2025, arXiv 2502.14830), through LoRA.

One LoRA adapter is trained on the task loss plus a contrastive loss that pulls the mean-pooled
representation of each target sentence at a middle layer towards that of its English
translation: InfoNCE over cosine similarities with temperature 0.1, the other sentences of the
batch as negatives. The paper alternates the two losses; a weighted sum is offered too. At test
time the adapter is plain LoRA on the target text alone: no English side, no MT.

The English side arrives as the "flare" view's source_* tensors; it never reaches the FlareModel
(which would fuse it): it goes through the same LoRA model as a second, ordinary input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from flare.errors import FlareError
from flare.hf.formats import IGNORE_INDEX

TEMPERATURE = 0.1  # the paper's
Schedule = Literal["alternate", "sum"]


def model_depth(config: Any) -> int:
    """Transformer layers of a model config (its encoder's, for encoder-decoders)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("num_hidden_layers", "num_layers", "encoder_layers", "n_layer"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise FlareError(f"cannot tell how many layers {type(config).__name__} has")


def resolve_align_layer(layer: int, depth: int) -> int:
    """The hidden_states index of the aligned layer: `layer` (1..depth), 0 = the middle."""
    if layer > depth:
        raise FlareError(f"stage2.align_layer: {layer} is past the model's {depth} layers (0 = the middle)")
    return layer or max(depth // 2, 1)


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, d) states averaged over the real tokens of each row ((B, L) mask): padding, and where
    it sits, changes nothing."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


def alignment_loss(target: torch.Tensor, english: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Symmetric InfoNCE of (B, d) pooled vectors: cosine similarity / temperature, row i's partner
    is column i and the rest of the batch are the negatives; the mean of the target->English and
    English->target cross-entropies."""
    similarity = F.normalize(target.float(), dim=-1) @ F.normalize(english.float(), dim=-1).T / temperature
    gold = torch.arange(similarity.shape[0], device=similarity.device)
    return (F.cross_entropy(similarity, gold) + F.cross_entropy(similarity.T, gold)) / 2


@dataclass
class AlignOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor | None = None
    task_loss: torch.Tensor | None = None
    align_loss: torch.Tensor | None = None


class MidAlignModel(nn.Module):
    """A LoRA model (a FlareModel without English side: plain LoRA) trained with middle-layer
    alignment. Called with the English side (source_*) in training; without it, it is the LoRA
    model itself, and it saves as one (`save_pretrained`), so the saved adapter loads as plain LoRA."""

    def __init__(self, model: nn.Module, layer: int, schedule: Schedule = "alternate", weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        backbone = model.backbone
        self.layer = resolve_align_layer(layer, model_depth(backbone.config))
        self.schedule, self.weight = schedule, weight
        self.encoder_decoder = bool(getattr(backbone.config, "is_encoder_decoder", False))
        self.step = 0

    def set_training_step(self, step: int) -> None:
        """The optimizer step about to run (the training loop calls this): the alternation's clock."""
        self.step = step

    def forward(self, **batch: torch.Tensor) -> Any:
        source = {k[len("source_"):]: batch.pop(k) for k in [k for k in batch if k.startswith("source_")]}
        if not source:
            return self.model(**batch)
        align_step = self.schedule == "alternate" and self.step % 2 == 1
        task_step = self.schedule == "sum" or not align_step
        target_states, output = None, None
        if task_step:
            output = self.model(**batch, output_hidden_states=not self.encoder_decoder)
            if not self.encoder_decoder:
                target_states = output.hidden_states[self.layer]
        if self.schedule == "alternate" and task_step:
            return AlignOutput(output.loss, output.logits, task_loss=output.loss)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if target_states is None:
            target_states = self._states(inputs)
        english_states = self._states(source)
        target_mask = batch["attention_mask"].clone()
        labels = batch.get("labels")
        if labels is not None and labels.shape == target_mask.shape:  # a decoder's answer tokens: not the sentence
            target_mask = target_mask * (labels == IGNORE_INDEX)
        align = alignment_loss(mean_pool(target_states, target_mask),
                               mean_pool(english_states, source["attention_mask"]))
        if output is None:
            return AlignOutput(align, align_loss=align)
        return AlignOutput(output.loss + self.weight * align, output.logits, output.loss, align)

    def _states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The aligned layer's output for inputs without labels (an encoder-decoder's encoder)."""
        if self.encoder_decoder:
            encoder = self.model.backbone.get_encoder()
            return encoder(**inputs, output_hidden_states=True).hidden_states[self.layer]
        return self.model(**inputs, output_hidden_states=True).hidden_states[self.layer]

    def generate(self, *args: Any, **kwargs: Any):
        return self.model.generate(*args, **kwargs)

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.model.gradient_checkpointing_enable(**kwargs)

    def save_pretrained(self, directory, **kwargs: Any) -> None:
        self.model.save_pretrained(directory, **kwargs)
