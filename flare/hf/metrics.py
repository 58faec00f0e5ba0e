"""Evaluation metrics, implemented directly (the `evaluate` library needs the Hub).

Every score is a percentage (0-100) so classification and QA numbers read the same way in run
summaries. A classification prediction of None (an unparseable generation) is always wrong and
is never a class of its own.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from statistics import mean
from typing import Any

import numpy as np

from flare.errors import FlareError

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise FlareError(f"metrics: {len(predictions)} predictions but {len(references)} references")
    if not references:
        raise FlareError("metrics: no references to score")


def accuracy(predictions: Sequence[int | None], references: Sequence[int]) -> float:
    """Percentage of predictions equal to the reference label."""
    _check_lengths(predictions, references)
    return 100.0 * sum(p is not None and p == r for p, r in zip(predictions, references)) / len(references)


def macro_f1(
    predictions: Sequence[int | None], references: Sequence[int], labels: Sequence[int] | None = None
) -> float:
    """Unweighted mean of per-class F1, in percent. Classes default to those that occur in the
    references or predictions (as scikit-learn does); a class with no gold and no prediction
    among `labels` scores 0."""
    _check_lengths(predictions, references)
    classes = (
        list(labels) if labels is not None
        else sorted({r for r in references} | {p for p in predictions if p is not None})
    )
    scores = []
    for c in classes:
        tp = sum(p == c and r == c for p, r in zip(predictions, references))
        fp = sum(p == c and r != c for p, r in zip(predictions, references))
        fn = sum(r == c and p != c for p, r in zip(predictions, references))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return 100.0 * mean(scores)


def classification_metrics(eval_prediction: Any) -> dict[str, float]:
    """`compute_metrics` for `transformers.Trainer` on a classification head: accuracy and macro-F1
    (percent) of the arg-max class. Takes Trainer's `EvalPrediction` (or a (logits, labels) pair);
    label -100 marks a row to leave out, as in Trainer's own losses."""
    logits, labels = eval_prediction[0], eval_prediction[1]
    logits = logits[0] if isinstance(logits, tuple) else logits  # models that return more than logits
    predictions, labels = np.asarray(logits).argmax(-1).reshape(-1), np.asarray(labels).reshape(-1)
    kept = labels != -100
    predicted, gold = predictions[kept].tolist(), labels[kept].tolist()
    return {"accuracy": accuracy(predicted, gold), "macro_f1": macro_f1(predicted, gold)}


# --- SQuAD v1.1 ---------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalisation: lower-case, drop punctuation, drop English
    articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 on normalised text. As in SQuAD v1.1, an empty side scores 0."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def paper_compat_exact_match(prediction: str, gold: str) -> float:
    """The reference code's QA "exact match": case- and punctuation-insensitive string equality
    against the first gold answer only, with no article removal or inner-space collapsing.
    Reported beside SQuAD EM for comparison with the paper's numbers, never instead of it."""
    strip = lambda s: "".join(ch for ch in s.lower() if ch not in _PUNCTUATION).strip()  # noqa: E731
    return float(strip(prediction) == strip(gold))


def _gold_texts(reference: Any, where: str) -> list[str]:
    texts = reference.get("text") if isinstance(reference, Mapping) else reference
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or not texts:
        raise FlareError(f"metrics: {where} has no gold answers")
    return list(texts)


def squad(
    predictions: Mapping[str, str] | Sequence[str], references: Mapping[str, Any] | Sequence[Any]
) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 (max over gold answers), in percent, plus the paper-compatible
    exact match (first gold only). Predictions and references are either aligned lists or dicts
    keyed by example id; a reference is an answers dict ({"text": [...]}) or a list of strings."""
    if isinstance(references, Mapping):
        if not isinstance(predictions, Mapping):
            raise FlareError("metrics: references are keyed by id, so predictions must be too")
        missing = [key for key in references if key not in predictions]
        extra = [key for key in predictions if key not in references]
        if missing or extra:
            raise FlareError(
                f"metrics: predictions and references differ in ids ({len(missing)} missing, {len(extra)} unknown)"
            )
        keys = list(references)
        pairs = [(predictions[k], references[k], f"id {k}") for k in keys]
    else:
        _check_lengths(predictions, references)
        pairs = [(p, r, f"row {i + 1}") for i, (p, r) in enumerate(zip(predictions, references))]
    if not pairs:
        raise FlareError("metrics: no references to score")
    em = f1 = compat = 0.0
    for prediction, reference, where in pairs:
        golds = _gold_texts(reference, where)
        prediction = prediction or ""
        em += max(exact_match_score(prediction, g) for g in golds)
        f1 += max(f1_score(prediction, g) for g in golds)
        compat += paper_compat_exact_match(prediction, golds[0])
    n = len(pairs)
    return {
        "exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "exact_match_paper_compat": 100.0 * compat / n, "count": n,
    }


# --- Task-level helpers -------------------------------------------------------------------------


def compute_metrics(task_type: str, predictions: Any, references: Any) -> dict[str, float]:
    """All metrics for one language: accuracy and macro-F1 for classification, SQuAD for QA."""
    if task_type == "classification":
        return {
            "accuracy": accuracy(predictions, references), "macro_f1": macro_f1(predictions, references),
            "count": len(references),
        }
    if task_type == "qa":
        return squad(predictions, references)
    raise FlareError(f"metrics: unknown task type {task_type!r}")
