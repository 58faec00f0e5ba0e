"""Task registry: the three FLARE benchmarks (XNLI, NusaX, TyDiQA) and custom tasks declared in
YAML (flare/data/custom_task.py), by name or path (`get_task`). What a task is: flare/data/task_spec.py."""

from __future__ import annotations

from pathlib import Path

from flare.data.custom_task import task_from_yaml
from flare.data.task_spec import QA_METRICS, PromptTemplate, Task
from flare.errors import FlareError

# --- Built-in tasks -------------------------------------------------------------------------------

XNLI_LANGUAGES = ["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]
NUSAX_LANGUAGES = ["ace", "ban", "bbc", "bjn", "bug", "eng", "ind", "jav", "mad", "min", "nij", "sun"]
TYDIQA_LANGUAGES = ["ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te"]


def _xnli() -> Task:
    # Only English has training data (MultiNLI); the Hub's non-English "train" is machine
    # translated and must not pass for gold, so it is not declared.
    splits = {lang: ["dev", "test"] for lang in XNLI_LANGUAGES}
    splits["en"] = ["train", "dev", "test"]
    labels = ["entailment", "neutral", "contradiction"]
    return Task(
        name="xnli", type="classification", languages=XNLI_LANGUAGES, source_language="en", labels=labels,
        metric="accuracy", metrics=["accuracy", "macro_f1"], text_fields=["premise", "hypothesis"], splits=splits,
        split_roles={"train": "train", "validation": "dev", "test": "test"}, encoder_fields=["premise", "hypothesis"],
        decoder_prompt=PromptTemplate("Premise: {premise}\nHypothesis: {hypothesis}", "Label:"),
        seq2seq_prompt=PromptTemplate("premise: {premise} hypothesis: {hypothesis}", "label:"),
        verbalizer=list(labels), parallel=True, pair_by="row", reader="xnli",
    )


def _nusax() -> Task:
    labels = ["negative", "neutral", "positive"]
    return Task(
        name="nusax", type="classification", languages=NUSAX_LANGUAGES, source_language="eng", labels=labels,
        metric="macro_f1", metrics=["accuracy", "macro_f1"], text_fields=["text"],
        splits={lang: ["train", "valid", "test"] for lang in NUSAX_LANGUAGES},
        split_roles={"train": "train", "validation": "valid", "test": "test"}, encoder_fields=["text"],
        decoder_prompt=PromptTemplate("{text}", "Sentiment:"),
        seq2seq_prompt=PromptTemplate("sentiment: {text}", "label:"),
        verbalizer=list(labels), parallel=True, pair_by="id", reader="nusax",
    )


def _tydiqa() -> Task:
    # TyDiQA is not parallel across languages: every English side is machine translated.
    splits = {lang: ["dev"] for lang in TYDIQA_LANGUAGES}
    for lang in ("en", "ko", "sw"):
        splits[lang] = ["train", "dev"]
    return Task(
        name="tydiqa", type="qa", languages=TYDIQA_LANGUAGES, source_language="en", labels=[], metric="f1",
        metrics=list(QA_METRICS), text_fields=["question", "context"], splits=splits,
        split_roles={"train": "train", "validation": None, "test": "dev"}, encoder_fields=["question", "context"],
        decoder_prompt=PromptTemplate("Context: {context}\nQuestion: {question}", "Answer:"),
        seq2seq_prompt=PromptTemplate("question: {question} context: {context}", ""),
        verbalizer=[], parallel=False, reader="tydiqa",
    )


BUILTIN_TASKS = {"xnli": _xnli, "nusax": _nusax, "tydiqa": _tydiqa}


def get_task(name_or_yaml: str | Path) -> Task:
    """A built-in task by name ("xnli", "nusax", "tydiqa") or a custom task from a YAML file."""
    key = str(name_or_yaml)
    if key.lower() in BUILTIN_TASKS:
        return BUILTIN_TASKS[key.lower()]()
    if key.endswith((".yaml", ".yml")):
        return task_from_yaml(Path(key))
    raise FlareError(f"unknown task {key!r}: use one of {', '.join(BUILTIN_TASKS)} or a path to a task .yaml file")
