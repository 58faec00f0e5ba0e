"""X-Mixup (Yang et al., ICLR 2022) for encoder classifiers (BERT, RoBERTa, XLM-R), through LoRA.

Two streams go through one shared backbone, stacked in one batch: the target example and its
English side. At the mixing layer the English stream runs the layer unchanged; the target stream
runs the layer's self-attention sublayer, then a cross-attention that reuses that layer's own
query/key/value projections (queries from the target's post-self-attention states, keys and
values from the English stream's, English padding masked), and takes the mixed residual
h = LN(lambda * W_o CrossAttn + (1 - lambda) * h_T) in place of the usual one before the FFN.
lambda = 0.5 * sigmoid(w * H + b) per example, H the exact masked cross-attention entropy over both
directions (target->English + English->target), averaged over heads and real query positions;
(w, b) start at (1, 0), train and are saved with the adapter (xmixup.json + xmixup.safetensors).

The mixing is a forward hook on the layer's attention module (transformers' own module, LoRA
included); no modeling code is copied. Classification averages the two streams' logits.
Training loss: alpha * CE(English) + (1 - alpha) * CE(target) + KL(English || target) + MSE of the
last layer's first-token vectors. The English side each step is gold with probability
k / (k + exp(step / k)), else a machine-made English (scheduled sampling, `gold_probability`).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from flare.errors import FlareError
from flare.hf.midalign import model_depth

ALPHA = {"classification": 0.4, "qa": 0.2}  # the original scripts' weights of the English stream's CE
SAMPLING_K = {"classification": 1000, "qa": 2000}
LAMBDA_MAX = 0.5
CONFIG_FILE, WEIGHTS_FILE = "xmixup.json", "xmixup.safetensors"
MIXABLE = ("bert", "roberta", "xlm-roberta")  # encoder layers with .attention.self / .attention.output


def check_mixing(config: Any, layer: int) -> None:
    """One line before any work when the backbone cannot mix at `layer`."""
    kind = getattr(config, "model_type", "?")
    if kind not in MIXABLE:
        raise FlareError(f"methods: x-mixup is implemented for BERT / RoBERTa / XLM-R encoders, not {kind} models")
    depth = model_depth(config)
    if not 0 <= layer < depth:
        raise FlareError(f"stage2.mixup_layer: {layer} is past the model's layers 0..{depth - 1}")


def gold_probability(step: int, k: int) -> float:
    """Scheduled sampling: the chance that step `step` trains with the gold English."""
    exponent = step / k
    return 0.0 if exponent > 700 else k / (k + math.exp(exponent))


def uses_gold(seed: int, step: int, k: int) -> bool:
    """The draw of one step, a function of (seed, step) alone, so a resumed run draws the same."""
    return random.Random(seed * 1_000_003 + step).random() < gold_probability(step, k)


def cross_entropy_pair(scores: torch.Tensor, target_mask: torch.Tensor, english_mask: torch.Tensor) -> torch.Tensor:
    """H per example: the entropy of the attention of real target queries over real English keys,
    plus that of real English queries over real target keys (the scores transposed), each averaged
    over heads and real query positions. scores: (B, heads, Lt, Le) scaled dot products."""
    def entropy(s: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        s = s.float().masked_fill(~keys[:, None, None, :].bool(), float("-inf"))
        log_p = torch.log_softmax(s, dim=-1)
        h = -(log_p.exp() * log_p.masked_fill(~keys[:, None, None, :].bool(), 0.0)).sum(-1)  # (B, heads, Lq)
        weights = queries[:, None, :].float()
        return (h * weights).sum((1, 2)) / (weights.sum((1, 2)) * s.shape[1]).clamp(min=1)

    return entropy(scores, target_mask, english_mask) + entropy(scores.transpose(-1, -2), english_mask, target_mask)


def gate_lambda(gate: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    """lambda = 0.5 * sigmoid(w * H + b) per example, in float64 with the logit held within +-30 so
    that it stays strictly inside (0, 0.5): the target's own residual is never switched off, nor
    the English one (the gradient there is below 1e-13 anyway)."""
    logit = (gate[0].double() * entropy.double() + gate[1].double()).clamp(-30, 30)
    return LAMBDA_MAX * torch.sigmoid(logit)


@dataclass
class _Streams:
    batch: int  # rows of each stream: the first `batch` rows are the target stream
    target_mask: torch.Tensor
    english_mask: torch.Tensor
    lambdas: torch.Tensor | None = None


@dataclass
class MixupOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor


class XMixupModel(nn.Module):
    """A LoRA classifier (a FlareModel without English side: plain LoRA) run as X-Mixup's two
    streams. forward takes the target batch plus its English side as source_* (and in training,
    machine-made sides as machine<k>_source_*)."""

    def __init__(self, model: nn.Module, layer: int, task_type: str = "classification", seed: int = 0) -> None:
        super().__init__()
        if task_type != "classification":
            raise FlareError(f"x-mixup is implemented for classification, not {task_type}")
        backbone = model.backbone
        check_mixing(backbone.config, layer)
        self.model, self.layer, self.task_type, self.seed = model, layer, task_type, seed
        reference = next(p for p in model.parameters())
        self.gate = nn.Parameter(torch.tensor([1.0, 0.0], device=reference.device))  # (w, b) of the mixing layer
        self.step = 0
        self._streams: _Streams | None = None
        attention = backbone.base_model.encoder.layer[layer].attention
        attention.register_forward_hook(self._mix)

    # ----------------------------------------------------------------- the schedule

    def set_training_step(self, step: int) -> None:
        self.step = step

    def gold_steps(self, steps: int) -> int:
        """How many of the first `steps` optimizer steps drew the gold English."""
        return sum(uses_gold(self.seed, s, SAMPLING_K[self.task_type]) for s in range(steps))

    # ----------------------------------------------------------------- the two streams

    def forward(self, input_ids, attention_mask, labels=None, **inputs: torch.Tensor) -> MixupOutput:
        sides = _machine_sides(inputs)
        if self.training and sides and not uses_gold(self.seed, self.step, SAMPLING_K[self.task_type]):
            chosen = sides[random.Random(self.seed * 7919 + self.step).randrange(len(sides))]
            inputs.update({f"source_{k}": v for k, v in chosen.items()})
        source = {k[len("source_"):]: inputs.pop(k) for k in [k for k in inputs if k.startswith("source_")]}
        if "input_ids" not in source:
            raise FlareError("x-mixup reads the English side: pass source_input_ids and source_attention_mask")
        target = {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}
        length = max(input_ids.shape[1], source["input_ids"].shape[1])
        pad = self.model.backbone.config.pad_token_id or 0
        stacked = {key: torch.cat([_pad_right(target[key], length, pad if key == "input_ids" else 0),
                                   _pad_right(source[key], length, pad if key == "input_ids" else 0)])
                   for key in target}
        batch = input_ids.shape[0]
        self._streams = _Streams(batch, stacked["attention_mask"][:batch], stacked["attention_mask"][batch:])
        output = self.model(**stacked, output_hidden_states=labels is not None)
        # kept until the next forward: gradient checkpointing recomputes the mixing layer in backward
        target_logits, english_logits = output.logits[:batch].float(), output.logits[batch:].float()
        logits = (target_logits + english_logits) / 2
        if labels is None:
            return MixupOutput(None, logits)
        alpha = ALPHA[self.task_type]
        task = alpha * F.cross_entropy(english_logits, labels) + (1 - alpha) * F.cross_entropy(target_logits, labels)
        kl = F.kl_div(target_logits.log_softmax(-1), english_logits.log_softmax(-1), log_target=True,
                      reduction="batchmean")  # KL(English || target)
        last = output.hidden_states[-1]
        mse = F.mse_loss(last[:batch, 0].float(), last[batch:, 0].float())
        return MixupOutput(task + kl + mse, logits)

    def _mix(self, attention: nn.Module, args: tuple, output: Any):
        streams = self._streams
        if streams is None:
            return None
        hidden, rest = (output[0], output[1:]) if isinstance(output, tuple) else (output, ())
        b = streams.batch
        if hidden.shape[0] != 2 * b:  # a call that is not this model's two streams (the backbone used alone)
            return None
        target, english = hidden[:b], hidden[b:]
        projections = attention.self
        heads, size = projections.num_attention_heads, projections.attention_head_size

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], x.shape[1], heads, size).transpose(1, 2)

        query, key, value = split(projections.query(target)), split(projections.key(english)), split(
            projections.value(english))
        scores = query @ key.transpose(-1, -2) / math.sqrt(size)
        english_keys = streams.english_mask[:, None, None, :].bool()
        probabilities = scores.float().masked_fill(~english_keys, float("-inf")).softmax(-1).to(value.dtype)
        probabilities = projections.dropout(probabilities)
        context = (probabilities @ value).transpose(1, 2).reshape(target.shape)
        entropy = cross_entropy_pair(scores, streams.target_mask, streams.english_mask)
        lambdas = gate_lambda(self.gate, entropy)
        streams.lambdas = lambdas.detach()
        out = attention.output
        weight = lambdas.to(target.dtype)[:, None, None]
        mixed = out.LayerNorm(weight * out.dropout(out.dense(context)) + (1 - weight) * target)
        return (torch.cat([mixed, english]), *rest) if isinstance(output, tuple) else torch.cat([mixed, english])

    def last_lambdas(self) -> torch.Tensor | None:
        """The per-example lambda of the last forward (for tests and inspection)."""
        return None if self._streams is None else self._streams.lambdas

    # ----------------------------------------------------------------- saving

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.model.gradient_checkpointing_enable(**kwargs)

    def save_pretrained(self, directory, **kwargs: Any) -> None:
        self.model.save_pretrained(directory, **kwargs)
        save_file({"gate": self.gate.detach().cpu().contiguous()}, Path(directory) / WEIGHTS_FILE)
        (Path(directory) / CONFIG_FILE).write_text(json.dumps({"layer": self.layer, "task_type": self.task_type}))

    @classmethod
    def load(cls, model: nn.Module, directory: str | Path) -> XMixupModel:
        """The X-Mixup model of a saved adapter folder, on `model` (that folder's LoRA, loaded)."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
            gate = load_file(directory / WEIGHTS_FILE)["gate"]
        except (OSError, ValueError, KeyError) as error:
            raise FlareError(f"{directory} is not an x-mixup adapter ({type(error).__name__}: {error})") from None
        mixup = cls(model, int(meta["layer"]), meta.get("task_type", "classification"))
        with torch.no_grad():
            mixup.gate.copy_(gate.to(mixup.gate.device))
        return mixup.train(model.training)


def _machine_sides(inputs: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Pop the machine<k>_source_<name> inputs, grouped per side k."""
    sides: dict[str, dict[str, torch.Tensor]] = {}
    for key in [k for k in inputs if k.startswith("machine")]:
        side, name = key.split("_source_", 1)
        sides.setdefault(side, {})[name] = inputs.pop(key)
    return [sides[k] for k in sorted(sides)]


def _pad_right(tensor: torch.Tensor, length: int, value: int) -> torch.Tensor:
    return F.pad(tensor, (0, length - tensor.shape[1]), value=value)
