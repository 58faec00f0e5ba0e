"""Translation step: the real transformers path on a tiny random NLLB, cache, resume, outputs."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny_mt import available_data_dir, shared_tiny_nllb, training_sentences
from transformers import M2M100ForConditionalGeneration

from flare.data.parallel_data import read_translations as _read_by_id
from flare.data.parallel_data import translation_path
from flare.errors import FlareError
from flare.mt.translate import (
    DecodingSettings,
    translate_dataset,
    translation_quality,
    write_atomically,
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(shared_tiny_nllb(tmp_path_factory, available_data_dir()))


@pytest.fixture(scope="module")
def jav_rows() -> list[dict]:
    """14 Javanese NusaX-style rows, two of them repeating an earlier text."""
    texts = [s for s in training_sentences(available_data_dir())[1::4]][:12]
    rows = [{"id": f"r{i}", "text": text, "label": "positive"} for i, text in enumerate(texts)]
    rows += [{"id": "dup0", "text": texts[0]}, {"id": "dup1", "text": texts[3]}]
    return rows


@pytest.fixture
def generate_calls(monkeypatch) -> list[int]:
    """Count real model generate calls (the list's length), passing them through."""
    calls: list[int] = []
    original = M2M100ForConditionalGeneration.generate

    def counting(self, *args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(M2M100ForConditionalGeneration, "generate", counting)
    return calls


def _run(rows, model, out: Path, **kwargs):
    """allow_empty: the tiny random model translates some sentences to nothing (refusing that is
    tested with a stand-in model below); these tests are about the cache."""
    options = dict(model=model, src_lang="jav", tgt_lang="en", task="nusax", split="test",
                   translations_dir=out, batch_size=4, device="cpu", show_progress=False, allow_empty=True)
    return translate_dataset(rows, **(options | kwargs))


def test_writes_jsonl_and_meta_then_rerun_hits_cache_only(tiny_model, jav_rows, tmp_path, generate_calls):
    result = _run(jav_rows, tiny_model, tmp_path)
    assert result.output_path == tmp_path / "nusax" / "test" / "jav-eng.jsonl"  # "en" in NusaX's spelling
    rows = read_translations(result.output_path)
    meta = json.loads(result.meta_path.read_text())
    kept = {row["id"] for row in rows}
    assert [row["id"] for row in rows] == [row["id"] for row in jav_rows if row["id"] in kept]
    assert meta["dropped"]["eng"].get("empty_translation", 0) == len(jav_rows) - len(rows) < len(jav_rows)
    assert all(set(row) == {"id", "text"} and row["text"].strip() for row in rows)
    by_id = {row["id"]: row["text"] for row in rows}
    for copy, original in (("dup0", "r0"), ("dup1", "r3")):  # one translation per unique text
        assert by_id.get(copy) == by_id.get(original)
    assert meta["language_codes"] == {"jav": "jav_Latn", "eng": "eng_Latn"}
    assert meta["counts"]["unique_texts"] == 12 and meta["counts"]["translated"] == 12
    assert meta["counts"]["from_cache"] == 0
    assert sum(generate_calls) == 12 and len(generate_calls) == 3  # duplicates translated once

    generate_calls.clear()
    first_output = result.output_path.read_text()
    again = _run(jav_rows, tiny_model, tmp_path)
    assert generate_calls == []
    assert again.output_path.read_text() == first_output
    assert again.meta["counts"]["from_cache"] == 12 and again.meta["counts"]["translated"] == 0


def test_interrupted_run_resumes_and_matches_uninterrupted_run(tiny_model, jav_rows, tmp_path, monkeypatch):
    reference = _run(jav_rows, tiny_model, tmp_path / "reference").output_path.read_text()

    original = M2M100ForConditionalGeneration.generate
    calls: list[int] = []

    def crash_after_two(self, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(M2M100ForConditionalGeneration, "generate", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        _run(jav_rows, tiny_model, tmp_path / "resumed")
    assert not translation_path(tmp_path / "resumed", "nusax", "test", "jav", "eng").exists()
    with sqlite3.connect(tmp_path / "resumed" / "translation_cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM translations").fetchone()[0] == 8  # two batches of 4

    calls.clear()
    monkeypatch.setattr(
        M2M100ForConditionalGeneration, "generate", lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1]
    )
    resumed = _run(jav_rows, tiny_model, tmp_path / "resumed")
    assert len(calls) == 1  # only the last batch (4 unique texts) was left
    assert resumed.meta["counts"]["from_cache"] == 8 and resumed.meta["counts"]["translated"] == 4
    assert resumed.output_path.read_text() == reference


def test_changed_decoding_settings_miss_the_cache(tiny_model, jav_rows, tmp_path, generate_calls):
    _run(jav_rows[:4], tiny_model, tmp_path)
    generate_calls.clear()
    beam = _run(jav_rows[:4], tiny_model, tmp_path, num_beams=2)
    assert len(generate_calls) == 1 and beam.meta["decoding"]["num_beams"] == 2


class SilentTranslator:
    """A stand-in model that translates the texts ending in 0 or 3 to blanks."""

    fingerprint = "silent"
    settings = DecodingSettings()

    def translate_batch(self, texts, src, tgt):
        return [" " if text.endswith(("0", "3")) else text.upper() for text in texts]


def test_empty_translations_are_refused_or_left_out_and_counted(tmp_path):
    rows = [{"id": str(i), "text": f"kalimat {i}"} for i in range(6)]
    options = dict(model="fake", src_lang="jav", tgt_lang="en", task="nusax", split="test", translations_dir=tmp_path,
                   translator=SilentTranslator(), show_progress=False)
    with pytest.raises(FlareError, match=r"translated 2 of 6 rows to empty text \(first: row '0'\); nothing written"):
        translate_dataset(rows, **options)
    assert not translation_path(tmp_path, "nusax", "test", "jav", "eng").exists()
    result = translate_dataset(rows, **options, allow_empty=True)
    assert [row["id"] for row in read_translations(result.output_path)] == ["1", "2", "4", "5"]
    assert result.meta["dropped"]["eng"] == {"empty_translation": 2}
    assert result.meta["counts"]["rows_out"] == 4 and result.meta["counts"]["from_cache"] == 6  # nothing retranslated


class ReverseTranslator:
    """A stand-in model: reverses each text, so every output names its input."""

    fingerprint = "reverse"
    settings = DecodingSettings()

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def translate_batch(self, texts, src, tgt):
        self.batches.append(list(texts))
        return [text[::-1] for text in texts]


def test_each_row_gets_its_own_translation_for_object_rows(tmp_path):
    rows = [SimpleNamespace(id=str(i), fields={"premise": f"p{i % 3} long" * (i + 1), "hypothesis": f"h{i}"},
                            answers=None) for i in range(7)]
    fake = ReverseTranslator()
    result = translate_dataset(rows, model="fake", src_lang="en", tgt_lang="sw", task="xnli", split="train",
                               translations_dir=tmp_path, batch_size=3, translator=fake, show_progress=False)
    out = read_translations(result.output_path)
    for row, record in zip(rows, out):
        assert record == {"id": row.id, "premise": row.fields["premise"][::-1],
                          "hypothesis": row.fields["hypothesis"][::-1]}
    lengths = [len(t) for batch in fake.batches for t in batch]
    assert lengths == sorted(lengths, reverse=True)  # length-sorted batches
    assert result.output_path.name == "en-sw.jsonl" and result.meta["language_codes"]["sw"] == "swh_Latn"


def test_qa_answers_are_projected_and_lost_ones_dropped(tmp_path):
    context = 'He said "no" twice. Paris is the capital of France, "they" wrote.'
    rows = [
        {"id": "ok", "question": "What is the capital?", "context": context,
         "answers": {"text": ["Paris"], "answer_start": [context.index("Paris")]}},
        {"id": "missing", "question": "q", "context": "abc", "answers": {"text": ["zzz"], "answer_start": [0]}},
        {"id": "lost", "question": "q", "context": "LOSE it", "answers": [{"text": "it", "answer_start": 5}]},
    ]

    class FrenchQuotes(ReverseTranslator):
        def translate_batch(self, texts, src, tgt):
            return [t.replace('"', "") if "LOSE" in t else t.replace('"', "«", 1).replace('"', "»", 1)
                    for t in texts]

    result = translate_dataset(rows, model="fake", src_lang="en", tgt_lang="fi", task="tydiqa", split="train",
                               translations_dir=tmp_path, translator=FrenchQuotes(), show_progress=False)
    (record,) = read_translations(result.output_path)
    start = record["answers"]["answer_start"][0]
    assert record["answers"]["text"] == ["Paris"]
    assert record["context"][start : start + 5] == "Paris"
    assert record["context"] == "He said no twice. Paris is the capital of France, they wrote."
    assert result.meta["dropped"] == {"fi": {"answer_not_in_context": 1, "markers_lost": 1}}
    assert result.meta["counts"]["rows_out"] == 1


def test_unsupported_and_unknown_languages_fail_clearly(tiny_model, tmp_path):
    rows = [{"id": "1", "text": "Aku seneng"}]
    with pytest.raises(FlareError, match="not covered by NLLB") as error:
        _run(rows, tiny_model, tmp_path, src_lang="mad")
    assert "\n" not in str(error.value)
    with pytest.raises(FlareError, match="unknown language code 'xx'"):
        _run(rows, tiny_model, tmp_path, src_lang="xx")
    with pytest.raises(FlareError, match="no language tag 'mad_Latn'"):
        _run(rows, tiny_model, tmp_path, src_lang="mad", language_map={"mad": "mad_Latn"})
    mapped = _run(rows, tiny_model, tmp_path, src_lang="mad", language_map={"mad": "ind_Latn"})
    assert mapped.meta["language_codes"] == {"mad": "ind_Latn", "eng": "eng_Latn"}
    assert mapped.output_path.name == "mad-eng.jsonl"
    with pytest.raises(FlareError, match="no text field 'premise'"):
        _run(rows, tiny_model, tmp_path, fields=["premise"])


def test_a_language_is_spelled_as_the_task_spells_it():
    """`en` is NusaX's `eng` and `eng` is XNLI's `en`: a translation file carries the task's code,
    which a study looks for; a code with no counterpart in the task stays as it is."""
    from flare.data.tasks import get_task
    from flare.mt.languages import same_language

    nusax, xnli = get_task("nusax"), get_task("xnli")
    assert same_language("en", nusax.languages) == "eng" and same_language("eng_Latn", nusax.languages) == "eng"
    assert same_language("eng", xnli.languages) == "en" and same_language("jv", nusax.languages) == "jv"
    assert same_language("fr", nusax.languages) == "fr" and same_language("jav", nusax.languages) == "jav"


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a" / "out.jsonl"
    write_atomically(target, "old\n")
    monkeypatch.setattr("os.fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_atomically(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.jsonl"]


def test_translation_quality_against_parallel_gold(data_dir):
    with open(data_dir / "nusax-mt" / "valid.csv", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))[:30]
    english = [row["english"] for row in table]
    assert translation_quality(english, english) == {"bleu": 100.0, "chrf": 100.0}
    scores = translation_quality([row["indonesian"] for row in table], english)
    assert 0 < scores["bleu"] < 30 and 0 < scores["chrf"] < 60
    with pytest.raises(FlareError, match="as many references"):
        translation_quality(english, english[:-1])


def test_m2m100_checkpoints_use_their_own_language_tags(tmp_path, generate_calls):
    from tiny_mt import build_tiny_m2m100
    from transformers import AutoTokenizer

    model = build_tiny_m2m100(tmp_path / "m2m", available_data_dir())
    rows = [{"id": "a", "text": "Aku seneng banget"}, {"id": "b", "text": "Rotine enak"}]
    result = _run(rows, str(model), tmp_path / "out")
    assert len(read_translations(result.output_path)) == 2 and len(generate_calls) == 1
    tokenizer = AutoTokenizer.from_pretrained(model)
    assert result.meta["language_codes"] == {"jav": "jav_Latn", "eng": "eng_Latn"}
    assert tokenizer.get_lang_id("jv") != tokenizer.get_lang_id("en")
    with pytest.raises(FlareError, match="M2M100 has no language tag"):
        _run(rows, str(model), tmp_path / "out", src_lang="ace")


def read_translations(path):
    """The translation rows in file order."""
    return list(_read_by_id(path).values())
