"""Model inputs for every family: encoders, decoders and encoder-decoders.

`PairFormatter` turns Pairs (or Examples) into features and features into padded tensors. Views:
* "flare": target text -> `input_ids`/`attention_mask`, English -> `source_input_ids`/`source_attention_mask`;
* "target" / "source": one side only (zero-shot, translate-train, translate-test);
* "input_fusion": one sequence, English then target, with twice the max length.

FLARE fuses source and target position by position, so both sides of an example go through the
same template, truncation side and max length, and are padded to the same length (the sides are
the backbone's, flare/hf/backbone.py, which also gives them to the tokenizer and the adapter):
* encoders and mT5 pad on the right (position 0 is CLS on both sides);
* decoders pad on the left and truncate on the left keeping BOS, so the answer cue ("Label:")
  survives. The English prompt is aligned on the *end of the target prompt*: where the target
  carries answer tokens (training, label scoring) the source carries padding with mask 0. This
  keeps training and inference alignment identical (at inference both sides end with the prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from flare.data.examples import Example, LoadStats, Pair, View
from flare.errors import FlareError
from flare.hf.backbone import BackboneSpec, Family, spec_for
from flare.hf.qa import answer_positions, qa_windows

IGNORE_INDEX = -100


@dataclass(frozen=True)
class FormatSettings:
    """How examples become token ids: lengths, truncation, QA windows and padding."""

    max_length: int = 128  # per side; input fusion gets twice this
    truncation_side: Literal["left", "right"] | None = None  # None: the backbone's (BackboneSpec.truncation_side)
    doc_stride: int = 32  # encoder QA: overlap between context windows
    max_answer_tokens: int = 32  # decoder/mT5 QA: answer budget, also the generation budget
    pad_to_max_length: bool = False  # pad every batch to the full length instead of its longest row


def render_prompt(task: Any, family: Family | BackboneSpec, sides: Sequence[Example]) -> str:
    """The prompt text of one or more examples (several = input fusion: bodies, then one cue)."""
    spec = spec_for(family, task.type)
    template = getattr(task, spec.prompt)
    body = spec.fusion_sep.join(template.body.format(**ex.fields) for ex in sides)
    return f"{body}{spec.prompt_sep}{template.cue}" if template.cue else body


def answer_text(task: Any, example: Example) -> str:
    """The gold answer string of a generative model: the label word, or the first gold answer."""
    if task.type == "classification":
        if example.label is None:
            raise FlareError(f"example {example.id} ({example.language}) has no label to train on")
        return task.verbalizer[example.label]
    if not example.answers or not example.answers["text"]:
        raise FlareError(f"example {example.id} ({example.language}) has no answer to train on")
    return example.answers["text"][0]


def parse_answer(text: str) -> str:
    """A generated QA answer: the first line, trimmed."""
    return text.strip().split("\n", 1)[0].strip()


def input_length(max_length: int, view: str) -> int:
    """Tokens one model input may hold: input-level fusion puts the English side and the target in
    one sequence, so it gets twice the per-side max_length."""
    return max_length * (2 if view == "input_fusion" else 1)


class PairFormatter:
    """Features and batches for one task, tokenizer, backbone and view. `family` is the backbone's
    spec, or its family name (the spec of that family and the task's type)."""

    def __init__(
        self, task: Any, tokenizer: Any, family: Family | BackboneSpec, view: View = "flare",
        settings: FormatSettings | None = None,
    ) -> None:
        self.spec = spec_for(family, task.type)
        self.task, self.tok, self.family, self.view = task, tokenizer, self.spec.family, view
        self.settings = settings or FormatSettings()
        if view not in ("flare", "target", "source", "input_fusion"):
            raise FlareError(f"unknown view {view!r}")
        self.truncation_side = self.settings.truncation_side or self.spec.truncation_side
        if self.spec.truncation_fixed and self.truncation_side != self.spec.truncation_side:
            raise FlareError(
                f"{self.family} prompts are truncated on the {self.spec.truncation_side} so the answer cue survives"
            )
        self.padding_side = self.spec.padding_side
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise FlareError("the tokenizer has neither a pad nor an EOS token")
        self.max_length = input_length(self.settings.max_length, view)
        self._budget: int | None = None

    # --- public API -------------------------------------------------------------------------------

    def features(
        self, items: Sequence[Pair | Example], train: bool = True, stats: LoadStats | None = None
    ) -> list[dict[str, Any]]:
        """One feature per item (several per item for windowed encoder QA). Training features carry
        labels; evaluation features carry only inputs plus `example_id` (and QA offsets)."""
        out: list[dict[str, Any]] = []
        for item in items:
            target, source = self._sides(item)
            if self.spec.head == "span":
                out.extend(self._encoder_qa(target, source, train, stats))
            elif self.spec.head == "classifier":
                out.append(self._encoder_cls(target, source, train, stats))
            else:
                out.append(self._generative(target, source, answer_text(self.task, target) if train else None, stats))
        return out

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad features into tensors. Target and source sequences share one length so that
        positions line up; a decoder's answer labels share its row, an encoder-decoder's are padded
        on their own (on the right) with -100."""
        if not features:
            raise FlareError("cannot collate an empty batch")
        aligned = [
            k for k in (
                "input_ids", "attention_mask", "token_type_ids",
                "source_input_ids", "source_attention_mask", "source_token_type_ids",
            )
            if k in features[0]
        ]
        if self.spec.answer == "after_prompt" and "labels" in features[0]:
            aligned.append("labels")
        length = max(len(f[k]) for f in features for k in aligned)
        if self.settings.pad_to_max_length:
            length = max(length, self.max_length)
        batch = {
            key: self._pad([f[key] for f in features], length, self._pad_value(key), self.padding_side)
            for key in aligned
        }
        if self.spec.answer == "decoder_labels" and "labels" in features[0]:
            label_length = max(len(f["labels"]) for f in features)
            batch["labels"] = self._pad([f["labels"] for f in features], label_length, IGNORE_INDEX, "right")
        for key in ("labels", "start_positions", "end_positions"):
            if key in features[0] and key not in batch:
                batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
        return batch

    def __call__(self, items: Sequence[Pair | Example]) -> dict[str, torch.Tensor]:
        """Training collate function: items -> padded tensors with labels."""
        return self.collate(self.features(items, train=True))

    def label_candidates(self, items: Sequence[Pair | Example]) -> dict[str, torch.Tensor]:
        """Decoder / mT5 classification by label likelihood: for each item, one row per label
        (item-major: row i*K+k is item i with label k), labels set only on the answer tokens.
        Score the model's logits with `candidate_log_likelihood`."""
        if self.spec.head != "label_words":
            raise FlareError("label candidates are for generative classification")
        features = []
        for item in items:
            target, source = self._sides(item)
            features.extend(self._generative(target, source, word) for word in self.task.verbalizer)
        return self.collate(features)

    # --- sides and tokenisation ---------------------------------------------------------------------

    def _sides(self, item: Pair | Example) -> tuple[Example, Example | None]:
        """(main example, English example or None). For input fusion the first is the target."""
        if isinstance(item, Example):
            if self.view in ("flare", "input_fusion"):
                raise FlareError(f"view '{self.view}' needs Pairs, got a single Example ({item.id})")
            return item, None
        if self.view == "target":
            return item.target, None
        if self.view == "source":
            return item.source, None
        return item.target, item.source

    def _encode(self, *texts: str) -> dict[str, list[int]]:
        previous = self.tok.truncation_side
        self.tok.truncation_side = self.truncation_side  # restored below: the tokenizer is the caller's
        try:
            enc = self.tok(*texts, truncation=True, max_length=self.settings.max_length, padding=False)
        finally:
            self.tok.truncation_side = previous
        return {k: list(v) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def _drop_leading_special(self, enc: dict[str, list[int]]) -> dict[str, list[int]]:
        """In a fused sequence the target's own CLS/BOS would sit mid-sequence; drop it."""
        starts = {self.tok.cls_token_id, self.tok.bos_token_id} - {None}
        if enc["input_ids"] and enc["input_ids"][0] in starts:
            return {k: v[1:] for k, v in enc.items()}
        return enc

    def _combine(self, target: dict[str, list[int]], source: dict[str, list[int]] | None) -> dict[str, Any]:
        if source is None:
            return dict(target)
        if self.view == "input_fusion":
            target = self._drop_leading_special(target)
            return {k: source[k] + target[k] for k in target}
        return {**target, **{f"source_{k}": v for k, v in source.items()}}

    def _encoder_cls(
        self, target: Example, source: Example | None, train: bool, stats: LoadStats | None
    ) -> dict[str, Any]:
        fields = self.task.encoder_fields
        enc_t = self._encode(*(target.fields[f] for f in fields))
        enc_s = self._encode(*(source.fields[f] for f in fields)) if source is not None else None
        # At the limit almost always means cut; re-tokenising untruncated just to be sure costs double.
        if stats is not None and any(len(e["input_ids"]) >= self.settings.max_length for e in (enc_t, enc_s) if e):
            stats.truncated += 1
        feature = self._combine(enc_t, enc_s)
        feature["example_id"] = target.id
        if train:
            if target.label is None:
                raise FlareError(f"example {target.id} ({target.language}) has no label to train on")
            feature["labels"] = target.label
        return feature

    def _encoder_qa(
        self, target: Example, source: Example | None, train: bool, stats: LoadStats | None
    ) -> list[dict[str, Any]]:
        max_len, stride = self.settings.max_length, self.settings.doc_stride
        t_windows = qa_windows(self.tok, target.fields["question"], target.fields["context"], max_len, stride)
        s_windows = (
            qa_windows(self.tok, source.fields["question"], source.fields["context"], max_len, stride)
            if source else None
        )
        features, found = [], False
        for k, window in enumerate(t_windows):
            enc_t = {key: window[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in window}
            offsets, cls = list(window["offset_mapping"]), window["cls_index"]
            enc_s = None
            if s_windows is not None:
                # Windows of a translation do not correspond one to one; the k-th target window is
                # fused with the k-th source window (the last one when the source is shorter).
                s_win = s_windows[0] if self.view == "input_fusion" else s_windows[min(k, len(s_windows) - 1)]
                enc_s = {key: s_win[key] for key in enc_t}
            feature = self._combine(enc_t, enc_s)
            shift = len(feature["input_ids"]) - len(offsets)  # English tokens before the target in input fusion
            feature["offset_mapping"] = [None] * shift + offsets
            feature["example_id"] = target.id
            if train:
                start, end = answer_positions(window, target.answers["answer_start"][0], target.answers["text"][0])
                found |= (start, end) != (cls, cls)
                feature["start_positions"], feature["end_positions"] = start + shift, end + shift
            features.append(feature)
        if train and not found and stats is not None:
            stats.skip("answer_outside_windows")  # kept as CLS-labelled windows, counted for the summary
        return features

    def _prompt_ids(self, sides: Sequence[Example], budget: int, stats: LoadStats | None) -> list[int]:
        """Prompt token ids, cut on the left to `budget` tokens while keeping a leading BOS."""
        ids = list(self.tok(render_prompt(self.task, self.spec, sides), add_special_tokens=True)["input_ids"])
        if self.spec.answer == "after_prompt":
            if len(ids) > 1 and ids[-1] == self.tok.eos_token_id:
                ids = ids[:-1]  # some tokenizers (Gemma add_eos_token) end prompts with EOS; answers follow
            if len(ids) > budget:
                if stats is not None:
                    stats.truncated += 1
                keep_bos = 1 if self.tok.bos_token_id is not None and ids[0] == self.tok.bos_token_id else 0
                ids = ids[:keep_bos] + ids[len(ids) - (budget - keep_bos) :]
        elif len(ids) > budget:  # encoder-decoders (mT5: no BOS): a closing EOS that must stay
            if stats is not None:
                stats.truncated += 1
            ids = ids[: budget - 1] + ids[-1:] if self.truncation_side == "right" else ids[len(ids) - budget :]
        return ids

    def _answer_ids(self, text: str) -> list[int]:
        eos = self.tok.eos_token_id
        if eos is None:
            raise FlareError("generative formats need a tokenizer with an EOS token")
        if self.spec.answer == "decoder_labels":
            ids = list(self.tok(text_target=text, add_special_tokens=True)["input_ids"])
            if len(ids) <= self.settings.max_answer_tokens:
                return ids
            return [*ids[: self.settings.max_answer_tokens - 1], eos]
        ids = list(self.tok(" " + text, add_special_tokens=False)["input_ids"])
        return [*ids[: self.settings.max_answer_tokens - 1], eos]

    def _answer_budget(self) -> int:
        if self._budget is None:  # cached: it is needed for every example
            words = self.task.verbalizer if self.task.type == "classification" else []
            self._budget = (
                max(len(self._answer_ids(word)) for word in words) if words else self.settings.max_answer_tokens
            )
        return self._budget

    def _generative(
        self, target: Example, source: Example | None, answer: str | None, stats: LoadStats | None = None
    ) -> dict[str, Any]:
        """Decoder / mT5 feature. The prompt budget always reserves the answer budget, so a prompt
        is cut the same way in training, label scoring and generation."""
        budget = self.max_length - (self._answer_budget() if self.spec.answer == "after_prompt" else 0)
        if self.view == "input_fusion":
            t_ids, s_ids = self._prompt_ids([source, target], budget, stats), None
        else:
            t_ids = self._prompt_ids([target], budget, stats)
            s_ids = self._prompt_ids([source], budget, stats) if source is not None else None
        feature: dict[str, Any] = {"example_id": target.id}
        if self.spec.answer == "after_prompt":
            a_ids = self._answer_ids(answer) if answer is not None else []
            feature["input_ids"] = t_ids + a_ids
            feature["attention_mask"] = [1] * len(feature["input_ids"])
            if answer is not None:
                feature["labels"] = [IGNORE_INDEX] * len(t_ids) + a_ids
            if s_ids is not None:
                feature["source_input_ids"] = s_ids + [self.pad_id] * len(a_ids)
                feature["source_attention_mask"] = [1] * len(s_ids) + [0] * len(a_ids)
        else:
            feature["input_ids"], feature["attention_mask"] = t_ids, [1] * len(t_ids)
            if s_ids is not None:
                feature["source_input_ids"], feature["source_attention_mask"] = s_ids, [1] * len(s_ids)
            if answer is not None:
                feature["labels"] = self._answer_ids(answer)
        return feature

    # --- padding ----------------------------------------------------------------------------------

    def _pad_value(self, key: str) -> int:
        if key == "labels":
            return IGNORE_INDEX
        return self.pad_id if key.endswith("input_ids") else 0

    @staticmethod
    def _pad(rows: Sequence[Sequence[int]], length: int, value: int, side: str) -> torch.Tensor:
        out = torch.full((len(rows), length), value, dtype=torch.long)
        for i, row in enumerate(rows):
            if not row:
                continue
            values = torch.tensor(list(row), dtype=torch.long)
            if side == "left":
                out[i, length - len(row) :] = values
            else:
                out[i, : len(row)] = values
        return out


def candidate_log_likelihood(
    logits: torch.Tensor, labels: torch.Tensor, num_labels: int, shift: bool = True, average: bool = False
) -> torch.Tensor:
    """(batch, num_labels) log-likelihood of each label's answer tokens, from the logits of a
    `label_candidates` batch. `shift=True` for decoders (token t predicts t+1); False for mT5,
    whose logits are already aligned with its labels. `average` divides by the answer length."""
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    scores = picked.sum(-1)
    if average:
        scores = scores / mask.sum(-1).clamp(min=1)
    return scores.view(-1, num_labels)

