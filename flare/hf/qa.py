"""Extractive QA for encoders: question + context windows, answer labels, and span decoding.

Long contexts are split into overlapping windows (`doc_stride` tokens of overlap). A training
window whose context part does not contain the whole answer is labelled with the CLS position,
as in the standard SQuAD recipe. Decoding takes the best span over all windows of an example with
end >= start, at most `max_answer_length` tokens, inside the context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flare.errors import FlareError

Window = dict[str, Any]


def _truncate_question(tokenizer: Any, question: str, max_tokens: int) -> str:
    """Cut an over-long question so the context always gets room in every window."""
    enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= max_tokens:
        return question
    return question[: enc["offset_mapping"][max_tokens - 1][1]]


def qa_windows(tokenizer: Any, question: str, context: str, max_length: int, doc_stride: int) -> list[Window]:
    """Tokenise (question, context) into windows of at most `max_length` tokens. Each window
    keeps `offset_mapping` only for context tokens (None elsewhere) and its `cls_index`."""
    if not getattr(tokenizer, "is_fast", False):
        raise FlareError("extractive QA needs a fast tokenizer (offset mappings); load it with use_fast=True")
    question = _truncate_question(tokenizer, question, max_length // 2)
    question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    room = max_length - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
    if doc_stride >= room:
        raise FlareError(
            f"doc_stride ({doc_stride}) must be smaller than the context room of a window "
            f"({room} tokens at max_length {max_length})"
        )
    enc = tokenizer(
        question, context, truncation="only_second", max_length=max_length, stride=doc_stride,
        return_overflowing_tokens=True, return_offsets_mapping=True, padding=False,
    )
    windows = []
    for i, ids in enumerate(enc["input_ids"]):
        sequence_ids = enc.sequence_ids(i)
        offsets = [tuple(off) if seq == 1 else None for off, seq in zip(enc["offset_mapping"][i], sequence_ids)]
        cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        window = {
            "input_ids": list(ids),
            "attention_mask": [1] * len(ids),
            "offset_mapping": offsets,
            "cls_index": ids.index(cls_id) if cls_id in ids else 0,
        }
        if "token_type_ids" in enc:
            window["token_type_ids"] = list(enc["token_type_ids"][i])
        windows.append(window)
    return windows


def answer_positions(window: Window, answer_start: int, answer_text: str) -> tuple[int, int]:
    """Token (start, end) of the character span inside this window, or (cls, cls) when the window's
    context does not contain the whole answer."""
    start_char, end_char = answer_start, answer_start + len(answer_text)
    context_idx = [i for i, off in enumerate(window["offset_mapping"]) if off is not None]
    cls = window["cls_index"]
    if not context_idx:
        return cls, cls
    first, last = context_idx[0], context_idx[-1]
    offsets = window["offset_mapping"]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls, cls
    start = first
    while start <= last and offsets[start][1] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][0] >= end_char:
        end -= 1
    if start > end:  # the answer covers no token (e.g. only characters the tokenizer drops)
        return cls, cls
    return start, end


def best_span(
    start_logits: Sequence[float], end_logits: Sequence[float], offsets: Sequence[tuple[int, int] | None],
    max_answer_length: int = 30, n_best: int = 20,
) -> tuple[float, tuple[int, int] | None]:
    """The highest-scoring (start, end) character span of one window: both ends inside the context,
    end >= start and at most `max_answer_length` tokens. Returns (score, None) when no span is valid."""
    length = min(len(offsets), len(start_logits))
    start_scores = np.asarray(start_logits[:length], dtype=np.float64)
    end_scores = np.asarray(end_logits[:length], dtype=np.float64)
    starts = np.argsort(-start_scores)[:n_best]
    ends = np.argsort(-end_scores)[:n_best]
    best_score, best = -np.inf, None
    for s in starts:
        if offsets[s] is None:
            continue
        for e in ends:
            if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            score = start_scores[s] + end_scores[e]
            if score > best_score:
                best_score, best = score, (offsets[s][0], offsets[e][1])
    return float(best_score), best


def decode_answers(
    features: Sequence[Mapping[str, Any]],
    start_logits: Sequence[Sequence[float]],
    end_logits: Sequence[Sequence[float]],
    contexts: Mapping[str, str],
    max_answer_length: int = 30,
    n_best: int = 20,
) -> dict[str, str]:
    """Answer text per example id, from the logits of all its windows (features in any order).
    Every example in `contexts` gets an entry; "" when none of its windows yields a valid span."""
    if len(features) != len(start_logits) or len(features) != len(end_logits):
        raise FlareError(
            f"span decoding: {len(features)} features but {len(start_logits)}/{len(end_logits)} logit rows"
        )
    best: dict[str, tuple[float, tuple[int, int] | None]] = {key: (-np.inf, None) for key in contexts}
    for feature, starts, ends in zip(features, start_logits, end_logits):
        key = feature["example_id"]
        if key not in best:
            raise FlareError(f"span decoding: feature for unknown example id {key!r}")
        score, span = best_span(starts, ends, feature["offset_mapping"], max_answer_length, n_best)
        if span is not None and score > best[key][0]:
            best[key] = (score, span)
    return {key: (contexts[key][span[0] : span[1]].strip() if span else "") for key, (_, span) in best.items()}
