"""Parallel data (not parallelism): pairing target-language examples with their English side,
gold (human-parallel) or machine-translated, and the translation-file contract.

Translation files are written by the translation step and read here:
`<translations_dir>/<task>/<split>/<src_lang>-<tgt_lang>.jsonl`, one JSON object per line
`{"id": <original example id>, <field>: <translated text>, ..., ["answers": {...}]}` plus a
sidecar `<src_lang>-<tgt_lang>.meta.json`. Rows whose QA answer could not be projected are absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flare.data.examples import Example, LoadStats, Pair, check_answers, require_text
from flare.errors import FlareError, brief
from flare.files import check_name, read_jsonl, read_text, write_atomically


def translation_path(translations_dir: str | Path, task: str, split: str, src_lang: str, tgt_lang: str) -> Path:
    for value, what in ((task, "task name"), (split, "split"), (src_lang, "language"), (tgt_lang, "language")):
        check_name(value, what)  # the path must stay inside translations_dir
    return Path(translations_dir) / task / split / f"{src_lang}-{tgt_lang}.jsonl"


def read_translations(path: Path) -> dict[str, dict[str, Any]]:
    """Translated rows keyed by the id of the example they translate."""
    if not path.is_file():
        raise FlareError(f"{path}: translation file not found (run the translation step first)")
    rows: dict[str, dict[str, Any]] = {}
    for number, row in read_jsonl(path):
        if "id" not in row:
            raise FlareError(f"{path}: line {number} has no 'id'")
        key = str(row["id"])
        if key in rows:
            raise FlareError(f"{path}: line {number} repeats id {brief(key)}")
        rows[key] = row
    return rows


def read_translation_meta(path: Path) -> dict[str, Any]:
    """The sidecar of a translation file ({} when it has none)."""
    meta = path.with_name(path.name.removesuffix(".jsonl") + ".meta.json")
    if not meta.is_file():
        return {}
    try:
        values = json.loads(read_text(meta))
    except json.JSONDecodeError as error:
        raise FlareError(f"{meta}: line {error.lineno} is not valid JSON ({error.msg})") from None
    if not isinstance(values, dict):
        raise FlareError(f"{meta}: not a JSON object")
    return values


def write_translations(
    translations_dir: str | Path,
    task: str,
    split: str,
    src_lang: str,
    tgt_lang: str,
    rows: Iterable[Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a translation file (and its sidecar) in the contract's layout; returns the JSONL path."""
    path = translation_path(translations_dir, task, split, src_lang, tgt_lang)
    write_atomically(path, "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows))
    sidecar = path.with_name(f"{src_lang}-{tgt_lang}.meta.json")
    write_atomically(sidecar, json.dumps(dict(meta or {}), ensure_ascii=False, indent=2) + "\n")
    return path


def pair_gold(
    sources: Sequence[Example],
    targets: Sequence[Example],
    source_file: str,
    target_file: str,
    by: str = "id",
    check_labels: bool = True,
) -> list[Pair]:
    """Pair human-parallel examples and verify the pairing: same number of rows, same ids (by id)
    or same row order (by row), and for classification the same label on both sides."""
    if len(sources) != len(targets):
        raise FlareError(
            f"{target_file}: {len(targets)} rows but the English file {source_file} has {len(sources)}; "
            "parallel files must match row for row"
        )
    if by == "row":
        matched = list(zip(sources, targets))
    else:
        by_id = {ex.id: ex for ex in sources}
        matched = []
        for number, target in enumerate(targets, start=1):
            if target.id not in by_id:
                raise FlareError(f"{target_file}: row {number} has id {brief(target.id)} that is not in {source_file}")
            matched.append((by_id[target.id], target))
    pairs = []
    for number, (source, target) in enumerate(matched, start=1):
        if check_labels and source.label != target.label:
            raise FlareError(
                f"{target_file}: row {number} (id {brief(target.id)}) has label {target.label} "
                f"but its English pair in {source_file} has {source.label}"
            )
        pairs.append(Pair(source, target, "gold"))
    return pairs


def translated_example(
    original: Example, row: Mapping[str, Any], language: str, text_fields: Sequence[str], is_qa: bool, where: str
) -> Example:
    """The machine-translated version of `original`: translated text fields, the original label,
    and for QA the projected answers (checked against the translated context)."""
    fields = dict(original.fields)
    for name in text_fields:
        if name not in row:
            raise FlareError(f"{where}: missing translated field '{name}'")
        fields[name] = require_text(row[name], where, name)
    answers = None
    if is_qa:
        if "answers" not in row:
            raise FlareError(f"{where}: missing projected 'answers'")
        answers = check_answers(row["answers"], fields["context"], where)
    return Example(original.id, language, fields, original.label, answers)


def pair_machine(
    originals: Sequence[Example],
    translations: Mapping[str, Mapping[str, Any]],
    translation_file: Path,
    translated_language: str,
    machine_side: str,
    text_fields: Sequence[str],
    is_qa: bool,
    stats: LoadStats | None = None,
) -> list[Pair]:
    """Pair each original example with its translation. `machine_side` is "target" for
    translate-train (English original, machine target) and "source" for translate-test (original
    target, machine English). Originals without a translation row are skipped and counted."""
    known = {ex.id for ex in originals}
    for key in translations:
        if key not in known:
            raise FlareError(f"{translation_file}: id {brief(key)} is not an example of the original data")
    pairs = []
    for original in originals:
        row = translations.get(original.id)
        if row is None:
            if stats is not None:
                stats.skip("missing_translation")
            continue
        where = f"{translation_file}: id {brief(original.id)}"
        machine = translated_example(original, row, translated_language, text_fields, is_qa, where)
        if machine_side == "target":
            pairs.append(Pair(original, machine, "machine"))
        else:
            pairs.append(Pair(machine, original, "machine"))
    return pairs
