"""The methods a study compares, defined once: what each reads, whether it trains an adapter, whether
the adapter fuses an English side, and how reports name it.

Everything else (settings' choices, the run plan, the pipeline, `flare predict`, the report's row
order) reads this table instead of testing method names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flare.data.examples import View

Objective = Literal["task", "mid-align", "x-mixup"]


@dataclass(frozen=True)
class Method:
    """One way of getting a target-language model out of the English task model.

    Args:
        name: the value of `methods:` in a study and of `method` in a record.
        label: the report's row name (fused methods add their fusion, e.g. "FLARE (add_relu)").
        view: what the model reads (flare.hf.formats): the target text, its English translation
            ("source"), both in one input ("input_fusion"), or both in two passes ("flare").
        trains: stage 2 trains an adapter (else the stage-1 model is used as it is).
        fused: the adapter fuses a second representation (it has a fusion function).
        english_in_training: the training data carry an English side (`data.train_english`).
        english_at_test: the test inputs carry an English side (`data.test_english`).
        english_as_examples: the training English sentences are extra training examples (no pairing).
        mt_states: the adapter fuses an MT encoder's states of the target text (needs `mt_model`).
        objective: what stage 2 trains on: the task loss alone, or the task loss plus middle-layer
            alignment with the English side (mid-align, flare/hf/midalign.py), or X-Mixup's two
            mixed streams (flare/hf/xmixup.py).
        train_view: what the model reads in training when it differs from `view` (mid-align reads
            both sides in training, the target alone at test).
        samples_english: the run's training English side (one run per side of `data.train_english`,
            as for english_in_training) does not replace the gold one: each step draws gold or it
            (X-Mixup's scheduled sampling); a gold run trains with gold alone.
    """

    name: str
    label: str
    view: View
    trains: bool
    fused: bool = False
    english_in_training: bool = False
    english_at_test: bool = False
    english_as_examples: bool = False
    mt_states: bool = False
    objective: Objective = "task"
    train_view: View | None = None
    samples_english: bool = False

    def run_label(self, fusion: str | None) -> str:
        return f"{self.label} ({fusion})" if self.fused else self.label


# In the paper's table order, which reports keep.
_TABLE = (
    Method("zero-shot", "zero-shot", "target", trains=False),
    Method("translate-test", "translate-test", "source", trains=False, english_at_test=True),
    Method("translate-train", "translate-train (LoRA)", "target", trains=True),
    # LoRA trained on the target data plus the English sentences as extra examples: FLARE's English
    # exposure without its fusion (a control, BENCHMARKS.md, "Where FLARE's gain comes from")
    Method("translate-train+english", "translate-train + English (LoRA)", "target", trains=True,
           english_in_training=True, english_as_examples=True),
    # the paper's X-Mixup row (Yang et al. 2022), trained through LoRA like every other row
    Method("x-mixup", "X-Mixup (LoRA)", "flare", trains=True, english_in_training=True, english_at_test=True,
           objective="x-mixup", samples_english=True),
    Method("input-fusion", "input-level fusion", "input_fusion", trains=True, english_in_training=True,
           english_at_test=True),
    Method("flare-mt", "FLARE-MT", "target", trains=True, fused=True, mt_states=True),
    Method("flare", "FLARE", "flare", trains=True, fused=True, english_in_training=True, english_at_test=True),
    # not in the paper's table: contrastive middle-layer alignment (Liu & Niehues 2025), which reads
    # the target text alone at test time
    Method("mid-align", "mid-layer alignment (LoRA)", "target", trains=True, english_in_training=True,
           objective="mid-align", train_view="flare"),
)
METHODS: dict[str, Method] = {method.name: method for method in _TABLE}
METHOD_NAMES = tuple(METHODS)  # the settings' Literal choices
TRAINED = tuple(name for name in METHOD_NAMES if METHODS[name].trains)
UNTRAINED = tuple(name for name in METHOD_NAMES if not METHODS[name].trains)  # they use the stage-1 model as it is
FUSED = tuple(name for name in METHOD_NAMES if METHODS[name].fused)
BASELINE = "translate-train"  # the reference row of paired differences


def table_rank(method: str) -> int:
    """A method's row position in reports; unknown methods (e.g. from older records) come last."""
    return METHOD_NAMES.index(method) if method in METHODS else len(METHOD_NAMES)
