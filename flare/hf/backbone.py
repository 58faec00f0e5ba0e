"""What a backbone's family decides, decided in one place.

A model's family (encoder, decoder, encoder-decoder) and the task type fix how it is loaded, how
its inputs are laid out and how FLARE pairs target and English positions. Those choices must agree
with each other: a decoder pads its prompts on the left, so its tokenizer must pad on the left and
the adapter must pair the ends of rows, not their starts. They are therefore one frozen
`BackboneSpec`, looked up once per (family, task type) by `spec_for`; the loader, the checks, the
formatter, evaluation and the adapter config read its fields instead of testing family names.

Nothing here imports torch or transformers at import time: the CLI imports it before it needs a
model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from flare.errors import FlareError

Family = Literal["encoder", "decoder", "encoder-decoder"]
TaskType = Literal["classification", "qa"]
Side = Literal["left", "right"]
# How a prediction is read: an encoder's classifier head or answer-span head, a generative model's
# likelihood of each label word, or its greedy generation.
Head = Literal["classifier", "span", "label_words", "generate"]
# Where a generative model's answer tokens go: after the prompt in the same row (decoders: the
# logits are shifted by one), in the decoder's own labels (encoder-decoders), or nowhere (encoders
# predict a class or span index).
Answer = Literal["none", "after_prompt", "decoder_labels"]

FAMILIES: tuple[Family, ...] = ("encoder", "decoder", "encoder-decoder")
TASK_TYPES: tuple[TaskType, ...] = ("classification", "qa")


@dataclass(frozen=True)
class BackboneSpec:
    """Everything a (family, task type) decides. Build it with `spec_for`."""

    family: Family
    task_type: TaskType
    auto_class: str  # the transformers Auto class the task model is built with
    head: Head
    padding_side: Side  # of every model input, and of the tokenizer load_backbone returns
    truncation_side: Side  # the default; FormatSettings.truncation_side may change it unless fixed
    truncation_fixed: bool  # decoders cut prompts on the left so the answer cue at their end survives
    answer: Answer
    prompt: str  # the task's template attribute for generative prompts
    prompt_sep: str  # between a prompt's body and its cue
    fusion_sep: str  # between the bodies of an input-fusion prompt
    peft_task_type: str | None  # PEFT's task type, which decides the wrapper class and what it saves
    modules_to_save: tuple[str, ...]  # a head PEFT does not know to train and save on its own

    @property
    def alignment(self) -> Side:
        """FlareConfig.alignment: which ends of a target and an English row pair position by
        position. It follows from the padding side: right-padded rows start with their real tokens
        (CLS on both sides), left-padded decoder rows end with them (the answer cue)."""
        return "right" if self.padding_side == "left" else "left"

    @property
    def generative(self) -> bool:
        return self.answer != "none"

    def model_class(self) -> Any:
        """The transformers Auto class of this spec."""
        import transformers  # here: `flare --help` reads this module (the families), and transformers takes seconds

        return getattr(transformers, self.auto_class)

    def head_config(self, num_labels: int) -> dict[str, Any]:
        """Config values the task head is built with: a classifier head's size. An answer-span head
        keeps the config's own (start and end)."""
        return {"num_labels": num_labels} if self.head == "classifier" else {}


_BY_FAMILY: dict[str, dict[str, Any]] = {  # family -> what holds for every task type
    "encoder": dict(
        padding_side="right", truncation_side="right", truncation_fixed=False, answer="none",
        prompt="decoder_prompt", prompt_sep="\n", fusion_sep="\n",
    ),
    "decoder": dict(
        padding_side="left", truncation_side="left", truncation_fixed=True, answer="after_prompt",
        prompt="decoder_prompt", prompt_sep="\n", fusion_sep="\n\n",
    ),
    "encoder-decoder": dict(
        padding_side="right", truncation_side="right", truncation_fixed=False, answer="decoder_labels",
        prompt="seq2seq_prompt", prompt_sep=" ", fusion_sep=" ",
    ),
}
_BY_TASK: dict[tuple[str, str], tuple[str, Head, str | None, tuple[str, ...]]] = {
    # (family, task type) -> Auto class, head, PEFT task type, extra modules PEFT saves
    ("encoder", "classification"): ("AutoModelForSequenceClassification", "classifier", "SEQ_CLS", ()),
    ("encoder", "qa"): ("AutoModelForQuestionAnswering", "span", None, ("qa_outputs",)),
    ("decoder", "classification"): ("AutoModelForCausalLM", "label_words", "CAUSAL_LM", ()),
    ("decoder", "qa"): ("AutoModelForCausalLM", "generate", "CAUSAL_LM", ()),
    ("encoder-decoder", "classification"): ("AutoModelForSeq2SeqLM", "label_words", "SEQ_2_SEQ_LM", ()),
    ("encoder-decoder", "qa"): ("AutoModelForSeq2SeqLM", "generate", "SEQ_2_SEQ_LM", ()),
}


def spec_for(family: str | BackboneSpec, task_type: str) -> BackboneSpec:
    """The spec of a family (a name, or a spec already decided, as callers that kept one pass it) for
    a task type; the same object every time it is asked for. A model's family comes from its config:
    `spec_for(model_family(config), task_type)`."""
    if isinstance(family, BackboneSpec):
        if family.task_type != task_type:  # a spec decided for another task would lay inputs out wrongly
            raise FlareError(f"a backbone spec for {family.task_type} used for a {task_type} task")
        return family
    return _spec(family, task_type)


@cache
def _spec(family: str, task_type: str) -> BackboneSpec:
    if family not in FAMILIES:
        raise FlareError(f"unknown model family {family!r}")
    if task_type not in TASK_TYPES:
        raise FlareError(f"unknown task type {task_type!r}")
    auto_class, head, peft_task_type, modules_to_save = _BY_TASK[family, task_type]
    return BackboneSpec(
        family=family, task_type=task_type, auto_class=auto_class, head=head,  # type: ignore[arg-type]
        peft_task_type=peft_task_type, modules_to_save=modules_to_save, **_BY_FAMILY[family],
    )


def model_family(config: Any, family: Family | None = None) -> Family:
    """The input family of a Hugging Face config (or its `model_type` string), read from
    transformers' own auto-class tables so that any architecture they know is recognised:
    an encoder-decoder has a seq2seq LM class (or says `is_encoder_decoder`), an encoder has a
    masked-LM class (BERT-likes also register a causal-LM head, so this test comes first), a
    decoder has only a causal-LM class. `family` overrides the inference."""
    from transformers.models.auto.modeling_auto import (  # here, as in model_class: --help reads this module
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    if family is not None:
        if family not in FAMILIES:
            raise FlareError(f"family: {family!r} is not one of {', '.join(FAMILIES)}")
        return family
    kind = (config if isinstance(config, str) else getattr(config, "model_type", "")).lower()
    if kind in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES or getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    raise FlareError(
        f"model type {kind or '(none)'!r} has no masked-LM, causal-LM or seq2seq class in transformers: "
        f"set family to one of {', '.join(FAMILIES)}"
    )

