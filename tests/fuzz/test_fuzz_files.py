"""Fuzzing the files a user hands over: custom task YAMLs with their CSV, TSV and JSON Lines data,
and translation JSON Lines files (fuzz_support.py states the rule). Each case loads a split and its
English pairs through the public API (`get_task(...).load` / `.load_pairs`): every outcome is
examples or a one-line FlareError, and reading writes nothing."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from fuzz_support import changes, check_api, check_cli, fuzz, run_cli, snapshot, tally, texts, values
from hypothesis import given
from hypothesis import strategies as st

from flare.data.tasks import get_task

TASK = {"name": "toy", "type": "classification", "languages": ["en", "de"], "labels": ["negative", "positive"],
        "id_column": "id", "files": "{language}/{split}.csv", "splits": ["test"], "parallel": True}
# keys a case may change; `dataset` (a Hub download) and `metric` (imports code) are left out on purpose
KEYS = ["name", "type", "languages", "source_language", "labels", "label_map", "text_fields", "columns", "id_column",
        "label_column", "splits", "parallel", "pair_by", "verbalizer", "prompt", "files", "unknown_key"]
SUFFIXES = {"csv": ",", "tsv": "\t", "jsonl": None}

cells = st.one_of(
    texts, st.sampled_from(["positive", "negative", "1", "", " ", '"', 'a,"b"', "x\ty", "a\nb", "\ufeff"]),
)


@st.composite
def table(draw, suffix: str) -> bytes:
    """A data file: a header and rows, valid or not, then perhaps spoiled bytes."""
    if draw(st.booleans()):  # a valid table (the same ids and labels in both languages), its texts hostile
        header = ["id", "text", "label"]
        rows = [[str(i), draw(texts.filter(lambda t: t.strip() and t.isprintable())) + "x", label]
                for i, label in enumerate(["positive", "negative", "positive"][: draw(st.integers(1, 3))])]
    else:
        header = draw(st.sampled_from([["id", "text", "label"], ["id", "text"], ["text", "label"],
                                       ["id", "text", "text", "label"], ["id", "label", "text", "extra"]]))
        rows = draw(st.lists(st.lists(cells, min_size=len(header) - 1, max_size=len(header) + 1), max_size=4))
    if suffix == "jsonl":
        lines = []
        for row in rows:
            if draw(st.integers(0, 6)) == 0:
                lines.append(json.dumps(draw(values)))
            else:
                lines.append(json.dumps(dict(zip(header, row))))
        text = "\n".join(lines) + "\n"
    else:
        separator = SUFFIXES[suffix]
        quote = draw(st.booleans())

        def cell(value: str) -> str:
            return '"' + value.replace('"', '""') + '"' if quote else value

        text = "\n".join(separator.join(cell(str(v)) for v in line) for line in [header, *rows]) + "\n"
    data = text.encode("utf-8", "surrogatepass")
    spoil = draw(st.sampled_from(["none"] * 6 + ["cut", "utf-16", "latin-1", "nul", "crlf", "empty"]))
    if spoil == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif spoil == "utf-16":
        data = text.encode("utf-16", "surrogatepass")
    elif spoil == "latin-1":
        data = data + b"9,caf\xe9,positive\n"
    elif spoil == "nul":
        position = draw(st.integers(0, len(data)))
        data = data[:position] + b"\x00" + data[position:]
    elif spoil == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif spoil == "empty":
        data = b""
    return data


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_files")


def _fresh(folder, name: str):
    case = folder / name
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir()
    return case


def _load_all(path, language: str = "de", **pairs):
    def call():
        task = get_task(str(path))
        task.load("test", language)
        task.load_pairs("test", language, **pairs)

    return call


@fuzz("task_files")
@given(suffix=st.sampled_from(sorted(SUFFIXES)), data=st.data(),
       changes=st.one_of(st.just([]), st.lists(st.tuples(st.sampled_from(KEYS), values), max_size=2)))
def test_task_files_and_their_data(folder, suffix, data, changes):
    case = _fresh(folder, "task")
    spec = {**TASK, "files": "{language}/{split}." + suffix}
    for key, value in changes:
        spec[key] = value
    (case / "en").mkdir()
    (case / "de").mkdir()
    (case / "en" / f"test.{suffix}").write_bytes(data.draw(table(suffix)))
    (case / "de" / f"test.{suffix}").write_bytes(data.draw(table(suffix)))
    try:
        text = yaml.safe_dump(spec, allow_unicode=True)
    except yaml.YAMLError:
        text = yaml.safe_dump(TASK)
    (case / "task.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    before = snapshot(folder)
    tally("task_files", check_api(_load_all(case / "task.yaml")))
    assert snapshot(folder) == before, "loading a task wrote a file"


VALID_DE = "id,text,label\n1,gutes Essen,positive\n2,schlechter Service,negative\n"
VALID_EN = "id,text,label\n1,good food,positive\n2,bad service,negative\n"


@st.composite
def translations(draw) -> bytes:
    rows = []
    if draw(st.booleans()):  # the two rows the data has, translated into hostile text
        rows = [json.dumps({"id": key, "text": draw(texts)}) for key in ("1", "2")[: draw(st.integers(1, 2))]]
    for _ in range(draw(st.integers(0, 4)) if not rows else draw(st.integers(0, 1))):
        kind = draw(st.sampled_from(["row", "row", "row", "any", "broken"]))
        if kind == "row":
            row = {"id": draw(st.one_of(st.sampled_from(["1", "2", 1, 2, "3", None, [1], 1.0]), texts)),
                   "text": draw(st.one_of(texts, values))}
            if draw(st.booleans()):
                row[draw(texts)] = draw(values)
            if draw(st.integers(0, 4)) == 0:
                del row["text"]
            rows.append(json.dumps(row, ensure_ascii=draw(st.booleans())))
        elif kind == "any":
            rows.append(json.dumps(draw(values)))
        else:
            rows.append(draw(texts).replace("\n", " "))
    data = ("\n".join(rows) + "\n").encode("utf-8", "surrogatepass")
    spoil = draw(st.sampled_from(["none"] * 6 + ["cut", "utf-16", "latin-1", "bom", "nul"]))
    if spoil == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif spoil == "utf-16":
        data = data.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    elif spoil == "latin-1":
        data += b'{"id": "2", "text": "caf\xe9"}\n'
    elif spoil == "bom":
        data = b"\xef\xbb\xbf" + data
    elif spoil == "nul":
        data = data.replace(b'"', b'"\x00', 1)
    return data


@fuzz("translation_jsonl")
@given(content=translations(), meta=st.one_of(st.none(), values.map(json.dumps), texts))
def test_translation_files(folder, content, meta):
    case = _fresh(folder, "translation")
    (case / "en").mkdir()
    (case / "de").mkdir()
    (case / "en" / "test.csv").write_text(VALID_EN)
    (case / "de" / "test.csv").write_text(VALID_DE)
    (case / "task.yaml").write_text(yaml.safe_dump(TASK))
    translated = case / "tr" / "toy" / "test"
    translated.mkdir(parents=True)
    (translated / "de-en.jsonl").write_bytes(content)
    if meta is not None:
        (translated / "de-en.meta.json").write_text(meta, encoding="utf-8", errors="surrogatepass")
    before = snapshot(folder)
    call = _load_all(case / "task.yaml", translations_dir=case / "tr", source="machine")
    tally("translation_jsonl", check_api(call))
    assert snapshot(folder) == before, "reading translations wrote a file"


RECORD = {"run_id": "nusax/flare/jav/seed1", "task": "nusax", "method": "flare", "label": "FLARE", "language": "jav",
          "seed": 1, "metric": "macro_f1", "score": 50.0}


@st.composite
def results(draw) -> bytes:
    """A results.jsonl: records near valid ones (a field replaced, removed or added), other JSON, text."""
    lines = []
    for index in range(draw(st.integers(1, 4))):
        record = {**RECORD, "run_id": f"nusax/flare/jav/seed{index}", "seed": index,
                  "language": draw(st.sampled_from(["jav", "sun"]))}
        for _ in range(draw(st.integers(0, 2))):
            key = draw(st.sampled_from([*RECORD, "model", "extra"]))
            if draw(st.integers(0, 4)) == 0:
                record.pop(key, None)
            else:
                record[key] = draw(values)
        lines.append(json.dumps(record) if draw(st.integers(0, 8)) else draw(texts).replace("\n", " "))
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 5)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


@fuzz("results_jsonl")
@given(content=results(), against=st.one_of(st.none(), texts, st.lists(texts, max_size=2).map(json.dumps)))
def test_report_on_any_results_file(folder, content, against):
    """The one target that writes: `flare report` (real, in process) writes results.csv, .md and .png
    into out/ or, refusing, nothing at all."""
    case = _fresh(folder, "report")
    (case / "results.jsonl").write_bytes(content)
    argv = ["report", str(case / "results.jsonl"), "--out_dir", str(case / "out")]
    if against is not None:
        argv += ["--against", against.replace("\x00", "")]
    before = snapshot(folder, skip=case / "out")
    status, _, stderr = run_cli(argv)
    outcome = check_cli(status, stderr, argv)
    after = snapshot(folder, skip=case / "out")
    assert after == before, f"report wrote outside its out_dir: {changes(before, after)}"
    written = sorted(p.name for p in (case / "out").iterdir()) if (case / "out").exists() else []
    if outcome == "accepted":
        assert {"results.csv", "results.md"} <= set(written), written
    else:
        assert written == [], f"a refused report left {written}"
    tally("results_jsonl", outcome)
