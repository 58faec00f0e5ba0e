"""Examples and the readers that turn dataset files into them.

Every reader validates as it goes and raises `FlareError` with a one-line message that names the
file, the row and the problem, so a broken dataset fails before any training starts. Rows are
counted from 1 and exclude a header line.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flare.errors import FlareError, brief, first_line
from flare.files import read_jsonl, read_text

# where a pair's English side comes from: the dataset's parallel side, machine translation, or a
# user who gave it (flare predict)
PairKind = Literal["gold", "machine", "given"]
# what a model reads of a pair (flare.hf.formats builds the inputs, flare.study.methods says which
# method reads which): the target text, its English side ("source"), both in one input, or both in two passes
View = Literal["flare", "target", "source", "input_fusion"]


@dataclass(frozen=True)
class Example:
    """One task example in one language. `id` is unique within (task, split, language) and is the
    key that links an example to its parallel version and to its translations."""

    id: str
    language: str
    fields: dict[str, str]
    label: int | None = None
    answers: dict[str, list] | None = None  # SQuAD style {"text": [...], "answer_start": [...]}


@dataclass(frozen=True)
class Pair:
    """An English (source) example and its target-language counterpart. `kind` says whether the
    two sides are a human-made parallel pair ("gold"), one side is machine translated ("machine"),
    or a user gave the English with the text to label ("given", flare predict)."""

    source: Example
    target: Example
    kind: PairKind


@dataclass
class LoadStats:
    """Counts of what a loader kept and skipped, for the run summary. Skipping happens only where
    the protocol allows it (e.g. QA rows whose answer could not be projected); everything else
    raises."""

    examples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0  # inputs that were cut to fit max_length (kept, but worth reporting)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "skipped": dict(self.skipped), "truncated": self.truncated}


def require_text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise FlareError(f"{where}: field '{name}' must be text, got {brief(value)}")
    if not visible(value):
        raise FlareError(f"{where}: field '{name}' is empty")
    return value


def visible(text: str) -> bool:
    """Whether text holds anything but whitespace and invisible format characters (zero-width
    spaces and joiners, byte-order marks), which str.strip() keeps."""
    return any(not char.isspace() and unicodedata.category(char) not in ("Cf", "Cc") for char in text)


def label_index(value: Any, labels: Sequence[str], where: str, label_map: Mapping[str, str] | None = None) -> int:
    """Map a raw label value to its class id; unknown values are an error, never a silent guess."""
    raw = str(value).strip() if value is not None else ""
    if label_map:
        raw = label_map.get(raw, raw)
    if raw not in labels:
        raise FlareError(f"{where}: unknown label {brief(value)} (expected one of: {', '.join(labels)})")
    return list(labels).index(raw)


def check_answers(answers: Any, context: str, where: str) -> dict[str, list]:
    """Validate a SQuAD-style answers dict against its context and return a clean copy."""
    if isinstance(answers, str):
        try:
            answers = json.loads(answers)
        except json.JSONDecodeError:
            raise FlareError(f"{where}: answers are not valid JSON: {brief(answers)}") from None
    if isinstance(answers, list):  # SQuAD JSON keeps a list of {"text", "answer_start"} objects
        try:
            answers = {"text": [a["text"] for a in answers], "answer_start": [a["answer_start"] for a in answers]}
        except (TypeError, KeyError):
            raise FlareError(f"{where}: answers must be objects with 'text' and 'answer_start'") from None
    if not isinstance(answers, Mapping) or "text" not in answers or "answer_start" not in answers:
        raise FlareError(f"{where}: answers must have 'text' and 'answer_start', got {brief(answers)}")
    texts, starts = list(answers["text"]), [int(s) for s in answers["answer_start"]]
    if len(texts) != len(starts):
        raise FlareError(f"{where}: answers have {len(texts)} texts but {len(starts)} answer_start values")
    for i, (text, start) in enumerate(zip(texts, starts)):
        if not isinstance(text, str) or not text.strip():
            raise FlareError(f"{where}: answer {i} is empty")
        if start < 0 or context[start : start + len(text)] != text:
            raise FlareError(f"{where}: answer {i} {brief(text)} does not match the context at offset {start}")
    return {"text": texts, "answer_start": starts}


# --- Built-in dataset layouts -------------------------------------------------------------------


def read_xnli_tsv(path: Path, language: str, labels: Sequence[str]) -> list[Example]:
    """XTREME-layout XNLI: `premise \\t hypothesis [\\t label]`, no header. The files contain no
    quote characters, so a plain split is exact (csv quoting rules would mangle other layouts)."""
    examples = []
    with io.StringIO(read_text(path), newline="") as handle:
        for row, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            where = f"{path}: row {row}"
            if len(cols) not in (2, 3):
                raise FlareError(f"{where}: expected 2 or 3 tab-separated columns, found {len(cols)}")
            fields = {
                "premise": require_text(cols[0], where, "premise"),
                "hypothesis": require_text(cols[1], where, "hypothesis"),
            }
            label = label_index(cols[2], labels, where) if len(cols) == 3 else None
            examples.append(Example(str(row - 1), language, fields, label))
    return examples


def read_squad_json(path: Path, language: str, stats: LoadStats | None = None) -> list[Example]:
    """SQuAD-1.1 JSON (TyDiQA-GoldP). Offsets are checked against the context; questions without
    any answer cannot train or be scored with SQuAD v1.1, so they are skipped and counted."""
    try:
        articles = json.loads(read_text(path))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise FlareError(f"{path}: not SQuAD-format JSON with a top-level 'data' list ({type(err).__name__})") from None
    examples, seen = [], set()
    for article in articles:
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context")
            for qa in paragraph.get("qas", []):
                qid = str(qa.get("id", ""))
                where = f"{path}: question {qid or '<no id>'}"
                if not qid or qid in seen:
                    raise FlareError(f"{where}: missing or duplicate question id")
                seen.add(qid)
                fields = {
                    "question": require_text(qa.get("question"), where, "question"),
                    "context": require_text(context, where, "context"),
                }
                if not qa.get("answers"):
                    if stats is not None:
                        stats.skip("no_answer")
                    continue
                answers = check_answers(qa["answers"], fields["context"], where)
                examples.append(Example(qid, language, fields, None, answers))
    return examples


# --- Custom datasets: CSV / TSV / JSONL / Parquet -------------------------------------------------


_EXTRA = "\0extra"  # where csv puts the values of a row longer than its header


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a table file as dicts, plus the column names, chosen by file suffix."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FlareError(f"{path}: file not found")
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(
            io.StringIO(read_text(path), newline=""), delimiter="\t" if suffix == ".tsv" else ",", restkey=_EXTRA
        )
        try:
            rows = list(reader)
        except csv.Error as error:
            raise FlareError(f"{path}: line {reader.line_num} is not valid {suffix[1:].upper()} ({error})") from None
        columns = list(reader.fieldnames or [])
        if any("\0" in column for column in columns):  # also keeps _EXTRA free for csv's overflow
            raise FlareError(f"{path}: the header holds a NUL character")
        repeated = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
        if repeated is not None:  # DictReader would keep only the last of the two, silently
            raise FlareError(f"{path}: the header names column {brief(repeated)} twice")
        for number, row in enumerate(rows, start=1):
            if _EXTRA in row or None in row.values():  # longer or shorter than the header
                found = len(columns) + len(row[_EXTRA]) if _EXTRA in row else sum(v is not None for v in row.values())
                raise FlareError(f"{path}: row {number} has {found} fields but the header names {len(columns)}")
        return rows, columns
    if suffix == ".jsonl":
        rows = [row for _, row in read_jsonl(path)]
        columns = sorted({key for row in rows for key in row})
        return rows, columns
    if suffix == ".parquet":
        import pyarrow.parquet as pq  # here: only Parquet files need it, and `flare --help` reads this module

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise FlareError(f"{path}: not a readable Parquet file ({first_line(error)})") from None
        columns = list(table.column_names)
        repeated = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
        if repeated is not None:
            raise FlareError(f"{path}: the table names column {brief(repeated)} twice")
        return table.to_pylist(), columns
    raise FlareError(f"{path}: unsupported file type '{suffix}' (use .csv, .tsv, .jsonl, .parquet or SQuAD .json)")


@dataclass(frozen=True)
class ColumnSpec:
    """Where a custom dataset keeps each piece of an example. `fields` maps task field to column."""

    fields: dict[str, str]
    label: str | None = None
    id: str | None = None  # None: the row number is the id
    answers: str | None = None  # QA: a column holding a SQuAD answers dict (JSON text in CSV)
    answer_text: str | None = None  # QA alternative: one answer as text + start columns
    answer_start: str | None = None


def examples_from_records(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    path: Path,
    language: str,
    spec: ColumnSpec,
    task_type: str,
    labels: Sequence[str],
    label_map: Mapping[str, str] | None = None,
    stats: LoadStats | None = None,
) -> list[Example]:
    needed = list(spec.fields.values()) + [c for c in (spec.id, spec.answers, spec.answer_text, spec.answer_start) if c]
    if task_type == "classification" and spec.label:
        needed.append(spec.label)
    rows = list(rows)
    if rows:  # JSONL rows can differ in keys: check each row below, the union here
        missing = [c for c in needed if c not in columns]
        if missing:
            raise FlareError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})")
    examples, seen = [], set()
    for number, row in enumerate(rows, start=1):
        where = f"{path}: row {number}"
        for column in needed:
            if column not in row:
                raise FlareError(f"{where}: missing column '{column}'")
        ex_id = str(row[spec.id]).strip() if spec.id else str(number - 1)
        if not ex_id or ex_id in seen:
            raise FlareError(f"{where}: empty or duplicate id {brief(ex_id)}")
        seen.add(ex_id)
        fields = {name: require_text(row[col], where, col) for name, col in spec.fields.items()}
        label, answers = None, None
        if task_type == "classification":
            label = label_index(row[spec.label], labels, where, label_map) if spec.label else None
        else:
            raw = (
                row[spec.answers] if spec.answers
                else {"text": [row[spec.answer_text]], "answer_start": [row[spec.answer_start]]}
            )
            if raw in (None, "") or (isinstance(raw, Mapping) and not raw.get("text")):
                if stats is not None:
                    stats.skip("no_answer")
                continue
            answers = check_answers(raw, fields["context"], where)
        examples.append(Example(ex_id, language, fields, label, answers))
    return examples


def read_nusax_csv(path: Path, language: str, labels: Sequence[str]) -> list[Example]:
    """NusaX-senti: `id,text,label` CSV. The id column is kept as the example id (it is shared by
    all 12 languages, which is what makes the pairing checkable)."""
    rows, columns = read_records(path)
    spec = ColumnSpec(fields={"text": "text"}, label="label", id="id")
    return examples_from_records(rows, columns, path, language, spec, "classification", labels)
