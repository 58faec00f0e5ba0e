"""The word-by-word lexicon translator: its rules on a small hand-made lexicon, the real NusaX
lexicons, the translation-file contract and cache, and bad lexicon files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flare.data.parallel_data import read_translation_meta, read_translations, translation_path
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.mt.lexicon import (
    LexiconTranslator,
    lexicon_quality,
    quality_table,
    read_lexicon,
    translate_with_lexicon,
)

# "xyz" is a made-up local language: ambiguity on both sides, a phrase, a note in parentheses.
LOCAL = ",indonesian,xyzish\n0,anak,bocah\n1,adopsi,ngangkat anak\n2,senang,bungah\n3,senang,seneng\n" \
        "4,tidak,ora (bukan)\n5,gembira,bungah\n6,nol,0\n7,jalan,mlaku/mlampah\n"
ENGLISH = ",indonesian,english\n0,senang,happy\n1,senang,glad\n2,anak,child\n3,adopsi,adopt\n4,tidak,not\n" \
          "5,jalan,walk\n6,jalan,road\n"


@pytest.fixture
def lexicons(tmp_path) -> Path:
    folder = tmp_path / "lexicon"
    folder.mkdir()
    (folder / "ind-xyz.csv").write_text(LOCAL, encoding="utf-8")
    (folder / "ind-eng.csv").write_text(ENGLISH, encoding="utf-8")
    return folder


@pytest.fixture
def real_lexicons(data_dir) -> Path:
    folder = data_dir / "nusax-lexicon"
    if not folder.is_dir():
        pytest.skip("no nusax-lexicon folder")
    return folder


def test_local_to_indonesian_to_english_word_by_word(lexicons):
    translate = LexiconTranslator("xyz", lexicons).translate
    # phrase before single words, first meaning of an ambiguous word, unknown word kept, punctuation kept
    assert translate("Aku ngangkat anak, ora bungah!") == "Aku adopt, not happy!"
    assert translate("bocah seneng mlampah") == "child happy walk"  # alternatives after "/" are keys too
    assert translate("Bungah") == "Happy"  # a capital stays a capital
    # a phrase never spans punctuation; "anak" alone is not xyzish but is Indonesian, so it still translates
    assert translate("ngangkat, anak") == "ngangkat, child"
    assert translate("  qwerty\t0 ") == "  qwerty\t0 "  # no word known: the text as it was
    # a local word listed for two Indonesian words means its first row's word
    assert LexiconTranslator("xyz", lexicons).to_pivot.table[("bungah",)] == "senang"


def test_indonesian_uses_the_english_table_alone(lexicons):
    translator = LexiconTranslator("ind", lexicons)
    assert translator.to_pivot is None
    assert translator.translate("anak tidak senang.") == "child not happy."


def test_real_lexicon_is_deterministic_and_keeps_punctuation(real_lexicons, data_dir):
    texts = [e.fields["text"] for e in get_task("nusax").load("test", "jav", data_dir)[:80]]
    first = [LexiconTranslator("jav", real_lexicons).translate(t) for t in texts]
    second = [LexiconTranslator("jav", real_lexicons).translate(t) for t in texts]
    assert first == second
    assert sum(a != b for a, b in zip(texts, first)) > 40  # most sentences have a known word

    def punctuation(text: str) -> str:
        return re.sub(r"[\w\s'’-]", "", text)

    assert [punctuation(t) for t in texts] == [punctuation(t) for t in first]
    assert all(out.strip() for out in first)


def test_translation_files_follow_the_contract_and_reruns_use_the_cache(real_lexicons, data_dir, tmp_path,
                                                                      monkeypatch):
    task = get_task("nusax")
    rows = task.load("test", "jav", data_dir)[:30]
    result = translate_with_lexicon(rows, src_lang="jav", task="nusax", split="test", translations_dir=tmp_path,
                                    folder=real_lexicons, show_progress=False)
    assert result.output_path == translation_path(tmp_path, "nusax", "test", "jav", "eng")
    meta = read_translation_meta(result.output_path)
    assert meta["model_fingerprint"].startswith("nusax-lexicon/jav@")
    assert meta["counts"]["translated"] == meta["counts"]["unique_texts"] > 0
    translator = LexiconTranslator("jav", real_lexicons)
    written = read_translations(result.output_path)
    assert {k: v["text"] for k, v in written.items()} == {r.id: translator.translate(r.fields["text"]) for r in rows}

    # the machine pairs of the study read the file: target kept, English from the lexicon
    pairs = task.load_pairs("test", "jav", data_dir, tmp_path, source="machine")
    assert len(pairs) == 30 and all(p.source.fields["text"] == written[p.target.id]["text"] for p in pairs)

    def refuse(self, text):
        raise AssertionError("a cached sentence was translated again")

    monkeypatch.setattr(LexiconTranslator, "translate", refuse)
    again = translate_with_lexicon(rows, src_lang="jav", task="nusax", split="test", translations_dir=tmp_path,
                                   folder=real_lexicons, show_progress=False)
    assert again.meta["counts"]["translated"] == 0
    assert again.meta["counts"]["from_cache"] == meta["counts"]["unique_texts"]
    assert read_translations(again.output_path) == written


def test_an_edited_lexicon_misses_the_cache(lexicons, tmp_path):
    rows = [{"id": "1", "text": "bocah bungah"}, {"id": "2", "text": "ora"}]
    options = dict(src_lang="xyz", task="toy", split="test", translations_dir=tmp_path / "t", folder=lexicons,
                   show_progress=False)
    first = translate_with_lexicon(rows, **options)
    (lexicons / "ind-eng.csv").write_text(ENGLISH.replace("happy", "cheerful"), encoding="utf-8")
    second = translate_with_lexicon(rows, **options)
    assert second.meta["counts"]["translated"] == 2
    assert second.meta["model_fingerprint"] != first.meta["model_fingerprint"]
    lines = [json.loads(x) for x in second.output_path.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"id": "1", "text": "child cheerful"}


def test_languages_nllb_lacks_need_no_language_map(real_lexicons, tmp_path):
    result = translate_with_lexicon([{"id": "a", "text": "Aku senang"}], src_lang="nij", task="nusax", split="test",
                                    translations_dir=tmp_path, folder=real_lexicons, show_progress=False)
    assert result.meta["language_codes"] == {"nij": "nij_Latn", "eng": "eng_Latn"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (",indonesian\n0,abu\n", "needs an 'indonesian' column and one language column"),
        (",malay,english\n0,abu,ash\n", "needs an 'indonesian' column"),
        (",indonesian,english,extra\n0,abu,ash,x\n", "one language column"),
        ("", "empty file"),
        (",indonesian,english\n", "no word rows"),
        (",indonesian,english\n0,abu\n", "line 2 has 2 fields"),
        (b",indonesian,english\n0,caf\xe9,coffee\n", "line 2 is not UTF-8"),
    ],
)
def test_bad_lexicon_files_are_refused_with_one_line(lexicons, content, message):
    path = lexicons / "ind-eng.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(FlareError) as error:
        LexiconTranslator("xyz", lexicons)
    assert message in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(FlareError):
        read_lexicon(path)


def test_missing_files_and_wrong_directions_are_refused(lexicons, tmp_path):
    with pytest.raises(FlareError, match=r"ind-abc\.csv: lexicon file not found"):
        LexiconTranslator("abc", lexicons)
    with pytest.raises(FlareError, match="into English"):
        LexiconTranslator("eng", lexicons)
    with pytest.raises(FlareError, match="into English"):
        translate_with_lexicon([{"id": "1", "text": "x"}], src_lang="xyz", tgt_lang="jav", task="t", split="s",
                               translations_dir=tmp_path, folder=lexicons, show_progress=False)
    assert not (tmp_path / "translation_cache.sqlite").exists()  # refused before any work


def test_quality_against_the_gold_english(real_lexicons, data_dir):
    pytest.importorskip("sacrebleu")
    result = lexicon_quality("sun", "test", data_dir, real_lexicons)
    assert result["sentences"] == 400
    assert 0 < result["coverage"] < 100
    assert result["chrf"] > result["chrf_untranslated"]  # the lexicon moves the text towards the English
    assert "| sun | 400 |" in quality_table([result])
