"""The one JSON Lines reader (`flare.files.read_jsonl`) and its three users: custom JSONL datasets
(`read_records`), translation files (`read_translations`) and results.jsonl (`load_results`) all
accept and refuse the same files with the same one-line message."""

import json
from pathlib import Path

import pytest

from flare.data.examples import read_records
from flare.data.parallel_data import read_translations
from flare.errors import FlareError
from flare.files import read_jsonl
from flare.study.report import load_results

RECORD = {"run_id": "t/m/de/seed1", "task": "t", "method": "m", "label": "M", "language": "de", "seed": 1,
          "metric": "accuracy", "score": 50.0, "id": "1", "text": "gut \u2028 ja"}


def _readers(path: Path) -> list:
    return [lambda: read_jsonl(path), lambda: read_records(path), lambda: read_translations(path),
            lambda: load_results(path)]


def test_bom_blank_lines_crlf_and_no_final_newline_are_accepted(tmp_path):
    path = tmp_path / "rows.jsonl"
    line = json.dumps(RECORD, ensure_ascii=False)  # U+2028 stays raw inside the string: no line break
    path.write_bytes(b"\xef\xbb\xbf\n  \n" + line.encode() + b"\r\n\n" + line.replace('"1"', '"2"').encode())
    assert read_jsonl(path) == [(3, RECORD), (5, dict(RECORD, id="2"))]
    assert [row["id"] for row in read_records(path)[0]] == ["1", "2"]
    assert list(read_translations(path)) == ["1", "2"]
    assert [r["text"] for r in load_results(path)] == ["gut \u2028 ja"]  # same run_id: the rerun wins


@pytest.mark.parametrize(("content", "message"), [
    ('{"id": "1"}\n\n[1, 2]\n', "line 3 is not a JSON object"),
    ('{"id": "1"}\nnot json\n', "line 2 is not valid JSON (Expecting value)"),
    ('{"id": "1"}\n{"id": "2", "te', "line 2 is not valid JSON (Unterminated string"),  # a torn last line
    ('{"id": "1"}\n{"id": "2"}}\n', "line 2 is not valid JSON (Extra data)"),
])
def test_every_reader_refuses_the_same_lines_in_the_same_words(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(content, encoding="utf-8")
    for read in _readers(path):
        with pytest.raises(FlareError) as err:
            read()
        assert str(err.value).startswith(f"{path}: {message}") and "\n" not in str(err.value)


def test_a_wrong_encoding_is_named_by_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"id": "1"}\n{"id": "caf\xe9"}\n')
    for read in _readers(path):
        with pytest.raises(FlareError, match=r"rows\.jsonl: line 2 is not UTF-8 text \(byte 0xe9\)"):
            read()
