"""Pairs from a user's own `datasets.Dataset` (or any sequence of row mappings).

FLARE needs each target-language example beside its English version. People usually hold both in
one table (a column of Swahili text and a column of its machine translation); this turns such a
table into the same `Pair` objects the built-in tasks produce, through the same row validation, so
`PairFormatter` and the pipeline treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from flare.data.examples import Example, Pair, PairKind, check_answers, label_index, read_records, require_text
from flare.data.task_spec import Task
from flare.errors import FlareError

Columns = str | Mapping[str, str]


def _fields(columns: Columns) -> dict[str, str]:
    """Task field -> column. One column name means the single field `text`."""
    if isinstance(columns, str):
        return {"text": columns}
    if not isinstance(columns, Mapping) or not columns:
        raise FlareError("columns must be a column name or a non-empty {field: column} mapping")
    return dict(columns)


def _label_names(dataset: Any, column: str, labels: Sequence[str] | None) -> list[str]:
    """The class names: given, else from a `datasets.ClassLabel` feature."""
    if labels is not None:
        return [str(name) for name in labels]
    feature = getattr(dataset, "features", {}).get(column) if hasattr(dataset, "features") else None
    names = getattr(feature, "names", None)
    if not names:
        raise FlareError(f"label column {column!r} is not a ClassLabel: pass labels=[...] with the class names")
    return list(names)


def pairs_from_dataset(
    dataset: Any,
    *,
    text: Columns,
    english: Columns,
    label: str | None = None,
    labels: Sequence[str] | None = None,
    answers: str | None = None,
    english_answers: str | None = None,
    language: str = "target",
    id_column: str | None = None,
    kind: PairKind = "machine",
    label_map: Mapping[str, str] | None = None,
) -> list[Pair]:
    """Pairs (English source, target) from a `datasets.Dataset` or a list of row dicts.

    Args:
        dataset: rows with target text, its English version and (for training) a label or answers.
        text: the target-language column, or {task field: column} for several fields
            (e.g. {"premise": "premise_sw", "hypothesis": "hypothesis_sw"}).
        english: the English column(s), with the same fields as `text`.
        label: the class column (ids of a ClassLabel, or class names); None for unlabelled rows.
        labels: the class names in class-id order; default: the ClassLabel feature's names.
        answers: a SQuAD-style answers column of the target side (extractive QA).
        english_answers: the English side's answers column, when it has one.
        language: the target language code written into each Example.
        id_column: the column of example ids (default: the row number).
        kind: "machine" when the English side is machine translated, "gold" for human translations.
        label_map: raw label value -> class name, applied before the names are checked.
    """
    target_fields, source_fields = _fields(text), _fields(english)
    if set(target_fields) != set(source_fields):
        raise FlareError(f"text and english must name the same fields, got {sorted(target_fields)} and "
                         f"{sorted(source_fields)}")
    if kind not in ("gold", "machine"):
        raise FlareError(f"kind must be gold or machine, not {kind!r}")
    column_names = getattr(dataset, "column_names", None)
    wanted = [*target_fields.values(), *source_fields.values(), label, answers, english_answers, id_column]
    if column_names is not None:
        missing = [c for c in wanted if c is not None and c not in column_names]
        if missing:
            raise FlareError(f"dataset has no column {missing[0]!r} (columns: {', '.join(column_names)})")
    names = _label_names(dataset, label, labels) if label is not None else None
    pairs: list[Pair] = []
    seen: set[str] = set()
    for number, row in enumerate(dataset):
        where = f"dataset row {number + 1}"
        if not isinstance(row, Mapping):
            raise FlareError(f"{where}: expected a mapping of columns, got {type(row).__name__}")
        for column in wanted:
            if column is not None and column not in row:
                raise FlareError(f"{where}: no column {column!r}")
        example_id = str(row[id_column]) if id_column else str(number)
        if example_id in seen:
            raise FlareError(f"{where}: duplicate id {example_id!r} in column {id_column!r}")
        seen.add(example_id)
        target = {f: require_text(row[c], where, c) for f, c in target_fields.items()}
        source = {f: require_text(row[c], where, c) for f, c in source_fields.items()}
        class_id = None
        if names is not None:
            raw = row[label]
            value = names[raw] if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(names) else raw
            class_id = label_index(value, names, where, label_map)
        target_answers = source_answers = None
        if answers is not None:
            target_answers = check_answers(row[answers], target.get("context", ""), where)
        if english_answers is not None:
            source_answers = check_answers(row[english_answers], source.get("context", ""), where)
        pairs.append(Pair(
            source=Example(example_id, "en", source, class_id, source_answers),
            target=Example(example_id, language, target, class_id, target_answers),
            kind=kind,
        ))
    if not pairs:
        raise FlareError("dataset has no rows")
    return pairs


ENGLISH_PREFIX = "english_"


def pairs_from_file(
    task: Task, path: str | Path, language: str, needs_english: bool,
    translate: Callable[[list[list[str]]], list[list[str]]] | None = None,
) -> list[Pair]:
    """A user's own labelled test file (`flare evaluate --test`): CSV, TSV or JSONL with the task's
    text columns (its field names, or a custom task's `columns`), `label` (classification) or
    `answers` (QA, SQuAD-style JSON), an optional `id`, and the English side in `english_<column>`.
    Without English columns, a method that reads English gets them from `translate` (one column of
    texts per text field -> their English, called once every row is valid), else the file is
    refused; other methods never read that side."""
    rows, columns = read_records(Path(path))
    if not rows:
        raise FlareError(f"{path}: no rows")
    spec = task.columns
    text = {f: (spec.fields.get(f, f) if spec else f) for f in task.text_fields}
    english = {f: ENGLISH_PREFIX + c for f, c in text.items()}
    given = [c for c in english.values() if c in columns]
    if given and len(given) != len(english):
        missing = [c for c in english.values() if c not in columns]
        raise FlareError(f"{path}: has {given[0]} but no {missing[0]}: give every English column or none")
    if not given and needs_english and translate is None:
        raise FlareError(
            f"{path}: this method reads the English side: add column(s) {', '.join(english.values())}, "
            "or set mt_model to translate on the fly"
        )
    label = answers = None
    if task.type == "classification":
        label = spec.label if spec and spec.label else "label"
    else:
        answers = spec.answers if spec and spec.answers else "answers"
    id_column = spec.id if spec and spec.id else ("id" if "id" in columns else None)
    stand_in = not given  # the target text stands in for the English until (unless) it is translated
    try:
        pairs = pairs_from_dataset(
            rows, text=text, english=text if stand_in else english, label=label,
            labels=task.labels if label else None, answers=answers, language=language, id_column=id_column,
            label_map=task.label_map,
        )
    except FlareError as error:
        raise FlareError(f"{path}: {error}") from None
    if stand_in and needs_english:
        translated = dict(zip(text, translate([[p.target.fields[f] for p in pairs] for f in text])))
        pairs = [
            replace(pair, source=replace(pair.source, fields={
                f: require_text(translated[f][number], f"{path}: row {number + 1}, English translation of", f)
                for f in text
            }))
            for number, pair in enumerate(pairs)
        ]
    return pairs
