"""Predictions and scores for one (model, view, list of examples or pairs).

Classification: encoders take the argmax of the head; decoders and mT5 score the log-likelihood
of each label word (no free generation to parse). QA: encoders decode the best span over all
context windows; decoders and mT5 generate greedily. Scores use flare.hf.metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from flare.data.examples import Example, Pair
from flare.errors import FlareError
from flare.hf.device import autocast, autocast_dtype, model_device
from flare.hf.formats import PairFormatter, candidate_log_likelihood, parse_answer
from flare.hf.metrics import compute_metrics
from flare.hf.qa import decode_answers

# Extra inputs per batch, e.g. FLARE-MT encoder states: (items of the batch) -> tensors.
ExtraInputs = Callable[[Sequence[Pair | Example]], dict[str, torch.Tensor]]


def reference_side(item: Pair | Example, view: str) -> Example:
    """The example whose gold answer scores a prediction: the English one in translate-test
    (TyDiQA's projected English answer), the target one otherwise."""
    if isinstance(item, Example):
        return item
    return item.source if view == "source" else item.target


def _chunks(items: Sequence[Any], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def predict_items(
    model: torch.nn.Module, formatter: PairFormatter, items: Sequence[Pair | Example], batch_size: int = 32,
    extra: ExtraInputs | None = None, progress: bool = True, probabilities: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Prediction per example id: a label index (classification) or an answer string (QA). A
    `probabilities` dict receives each classified example's class distribution (the softmax of
    the classifier's logits, or of the label words' log-likelihoods for generative models)."""
    model.eval()
    device = model_device(model)
    amp = autocast_dtype(model)  # as in training: float32 adapter weights on a bfloat16 base compute in bfloat16
    out: dict[str, Any] = {}
    bar = tqdm(total=len(items), desc="evaluate", leave=False, disable=not progress, dynamic_ncols=True)
    for chunk in _chunks(list(items), batch_size):
        with autocast(device, amp):
            out.update(_predict_chunk(model, formatter, chunk, extra, device, probabilities))
        bar.update(len(chunk))
    bar.close()
    return out


def _predict_chunk(model: torch.nn.Module, formatter: PairFormatter, chunk: Sequence[Pair | Example],
                   extra: ExtraInputs | None, device: torch.device,
                   probabilities: dict[str, list[float]] | None = None) -> dict[str, Any]:
    task, spec = formatter.task, formatter.spec
    out: dict[str, Any] = {}
    inputs = _to(extra(chunk), device) if extra is not None else {}  # e.g. FLARE-MT states, kept on the CPU
    ids = [reference_side(item, formatter.view).id for item in chunk]
    if spec.head == "label_words":
        batch = _to(formatter.label_candidates(chunk), device)
        k = len(task.labels)
        repeated = {n: t.repeat_interleave(k, dim=0) for n, t in inputs.items()}
        logits = model(**batch, **repeated).logits
        scores = candidate_log_likelihood(logits, batch["labels"], k, shift=spec.answer == "after_prompt")
        out.update(zip(ids, scores.argmax(-1).tolist()))
        if probabilities is not None:
            probabilities.update(zip(ids, scores.float().softmax(-1).tolist()))
    elif spec.head == "classifier":
        batch = _to(formatter.collate(formatter.features(chunk, train=False)), device)
        logits = model(**batch, **inputs).logits
        out.update(zip(ids, logits.argmax(-1).tolist()))
        if probabilities is not None:
            probabilities.update(zip(ids, logits.float().softmax(-1).tolist()))
    elif spec.head == "span":
        features = formatter.features(chunk, train=False)
        batch = _to(formatter.collate(features), device)
        result = model(**batch, **_per_window(inputs, features, chunk, formatter.view))
        contexts = {
            reference_side(item, formatter.view).id: reference_side(item, formatter.view).fields["context"]
            for item in chunk
        }
        out.update(decode_answers(
            features, result.start_logits.float().cpu().tolist(), result.end_logits.float().cpu().tolist(), contexts
        ))
    else:
        batch = _to(formatter.collate(formatter.features(chunk, train=False)), device)
        generated = model.generate(
            **batch, **inputs, max_new_tokens=formatter.settings.max_answer_tokens, do_sample=False,
            pad_token_id=formatter.pad_id,
        )
        if spec.answer == "after_prompt":  # a decoder's generation starts with its prompt
            generated = generated[:, batch["input_ids"].shape[1]:]
        texts = formatter.tok.batch_decode(generated, skip_special_tokens=True)
        out.update(zip(ids, (parse_answer(t) for t in texts)))
    return out


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _per_window(
    inputs: dict[str, torch.Tensor], features: list[dict[str, Any]], chunk, view: str
) -> dict[str, torch.Tensor]:
    """Extra per-example inputs repeated for each of an example's QA windows."""
    if not inputs:
        return {}
    position = {reference_side(item, view).id: i for i, item in enumerate(chunk)}
    rows = torch.tensor([position[f["example_id"]] for f in features])
    return {n: t[rows.to(t.device)] for n, t in inputs.items()}


def score(task: Any, predictions: dict[str, Any], items: Sequence[Pair | Example], view: str) -> dict[str, float]:
    """The task's metrics over the items (every item must have a prediction)."""
    references = [reference_side(item, view) for item in items]
    predicted = [predictions[r.id] for r in references]
    gold = [r.label for r in references] if task.type == "classification" else [r.answers for r in references]
    metrics = compute_metrics(task.type, predicted, gold)
    if getattr(task, "metric_function", None) is not None:  # a custom task's own metric
        value = task.metric_function(predicted, gold)
        try:
            metrics[task.metric] = float(value)
        except (TypeError, ValueError):
            raise FlareError(f"metric {task.metric}: returned {value!r:.60}, not a number") from None
    return metrics


def evaluate_items(
    model: torch.nn.Module, formatter: PairFormatter, items: Sequence[Pair | Example], batch_size: int = 32,
    extra: ExtraInputs | None = None, progress: bool = True,
) -> dict[str, float]:
    predictions = predict_items(model, formatter, items, batch_size, extra, progress)
    return score(formatter.task, predictions, items, formatter.view)
