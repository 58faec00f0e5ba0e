"""Loading the real datasets in /work/shared/data: counts, labels and alignment against each README,
plus every bad-input case (one-line FlareError naming file, row and problem)."""

from collections import Counter
from pathlib import Path

import pytest

from flare.data.examples import Example, LoadStats, read_records, read_squad_json
from flare.data.parallel_data import read_translation_meta, read_translations, translation_path, write_translations
from flare.data.tasks import get_task
from flare.errors import FlareError

NUSAX_COUNTS = {"train": (500, [192, 119, 189]), "valid": (100, [38, 24, 38]), "test": (400, [153, 96, 151])}
TYDIQA_DEV = {"ar": 921, "bn": 113, "en": 440, "fi": 782, "id": 565, "ko": 276, "ru": 812, "sw": 499, "te": 669}
TYDIQA_TRAIN = {"en": 3696, "ko": 1625, "sw": 2755}


def assert_one_line(err: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


# --- real data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", get_task("nusax").languages)
def test_nusax_every_language_and_split(data_dir, language):
    task = get_task("nusax")
    ids_seen = set()
    for split, (rows, distribution) in NUSAX_COUNTS.items():
        examples = task.load(split, language, data_dir)
        assert len(examples) == rows
        counts = Counter(ex.label for ex in examples)
        assert [counts[i] for i in range(3)] == distribution
        ids = {ex.id for ex in examples}
        assert len(ids) == rows and not ids & ids_seen  # unique within and across splits
        ids_seen |= ids
    assert ids_seen == {str(i) for i in range(1000)}


@pytest.mark.parametrize("language", [lang for lang in get_task("nusax").languages if lang != "eng"])
def test_nusax_gold_pairs_align_with_english(data_dir, language):
    task = get_task("nusax")
    for split in ("train", "valid", "test"):
        pairs = task.load_pairs(split, language, data_dir)
        assert len(pairs) == NUSAX_COUNTS[split][0]
        assert all(p.kind == "gold" and p.source.id == p.target.id and p.source.label == p.target.label for p in pairs)
        assert {p.source.language for p in pairs} == {"eng"} and {p.target.language for p in pairs} == {language}


def test_nusax_row_order_matches_the_mt_table(data_dir):
    """nusax-mt row i is the sentence at row i of every nusax-senti file (its README)."""
    rows, _ = read_records(data_dir / "nusax-mt" / "test.csv")
    task = get_task("nusax")
    eng = task.load("test", "eng", data_dir)
    ace = task.load("test", "ace", data_dir)
    assert [r["english"] for r in rows] == [ex.fields["text"] for ex in eng]
    assert [r["acehnese"] for r in rows] == [ex.fields["text"] for ex in ace]


@pytest.mark.parametrize("language", get_task("xnli").languages)
def test_xnli_every_language(data_dir, language):
    task = get_task("xnli")
    dev = task.load("dev", language, data_dir)
    assert len(dev) == 2490
    assert Counter(ex.label for ex in dev) == {0: 830, 1: 830, 2: 830}
    test = task.load("test", language, data_dir)  # the labelled copy is preferred
    assert len(test) == 5010
    assert Counter(ex.label for ex in test) == {0: 1670, 1: 1670, 2: 1670}
    assert [ex.id for ex in test[:3]] == ["0", "1", "2"]
    assert all(ex.fields["premise"] and ex.fields["hypothesis"] for ex in test)


def test_xnli_gold_pairs_align_by_row(data_dir):
    task = get_task("xnli")
    for language in task.target_languages:
        for split in ("dev", "test"):
            pairs = task.load_pairs(split, language, data_dir, source="gold")
            assert len(pairs) == (2490 if split == "dev" else 5010)
            assert all(p.source.label == p.target.label and p.source.id == p.target.id for p in pairs)
    # test rows are grouped three hypotheses per premise, identically in every language
    en = task.load("test", "en", data_dir)
    de = task.load("test", "de", data_dir)
    same_premise = lambda exs: [exs[i].fields["premise"] == exs[i + 1].fields["premise"] for i in range(0, 300)]  # noqa: E731
    assert same_premise(en) == same_premise(de)


def test_xnli_unlabelled_test_when_no_labelled_copy(tmp_path, data_dir):
    (tmp_path / "xnli").mkdir()
    src = (data_dir / "xnli" / "test-sw.tsv").read_bytes()
    (tmp_path / "xnli" / "test-sw.tsv").write_bytes(src)
    examples = get_task("xnli").load("test", "sw", tmp_path)
    assert len(examples) == 5010 and all(ex.label is None for ex in examples)


@pytest.mark.parametrize("language", get_task("tydiqa").languages)
def test_tydiqa_every_language_and_split(data_dir, language):
    task = get_task("tydiqa")
    stats = LoadStats()
    dev = task.load("dev", language, data_dir, stats=stats)
    assert len(dev) == TYDIQA_DEV[language] and stats.total_skipped == 0
    assert all(1 <= len(ex.answers["text"]) <= 2 for ex in dev)
    assert len({ex.id for ex in dev}) == len(dev)
    for ex in dev[:50]:
        start, text = ex.answers["answer_start"][0], ex.answers["text"][0]
        assert ex.fields["context"][start : start + len(text)] == text
    if language in TYDIQA_TRAIN:
        train = task.load("train", language, data_dir)
        assert len(train) == TYDIQA_TRAIN[language]
        assert all(len(ex.answers["text"]) == 1 for ex in train)
    else:
        assert "train" not in task.splits[language]


def test_tydiqa_dev_total_matches_official(data_dir):
    task = get_task("tydiqa")
    assert sum(len(task.load("dev", lang, data_dir)) for lang in task.languages) == 5077


def test_data_dir_from_environment(monkeypatch, data_dir):
    monkeypatch.setenv("FLARE_DATA_DIR", str(data_dir))
    assert len(get_task("nusax").load("valid", "jav")) == 100


# --- translation files and machine pairs ------------------------------------------------------------


def test_translate_train_pairs_for_tydiqa(tmp_path, data_dir):
    task = get_task("tydiqa")
    english = task.load("train", "en", data_dir)[:5]
    rows = []
    for ex in english[:4]:  # the 5th answer "could not be projected": absent from the file
        context = "Kontext: " + ex.fields["context"]
        answer = ex.answers["text"][0]
        rows.append({"id": ex.id, "question": "F: " + ex.fields["question"], "context": context,
                     "answers": {"text": [answer], "answer_start": [ex.answers["answer_start"][0] + 9]}})
    path = write_translations(tmp_path, "tydiqa", "train", "en", "fi", rows, {"model": "nllb-test", "dropped": 1})
    assert path == translation_path(tmp_path, "tydiqa", "train", "en", "fi")
    assert read_translation_meta(path)["dropped"] == 1
    assert len(read_translations(path)) == 4

    # fi has no train split: the target side is the machine translation of English train
    assert "train" not in task.splits["fi"]
    originals = {ex.id: ex for ex in english}
    stats = LoadStats()
    pairs = [
        p for p in task.load_pairs("train", "fi", data_dir, tmp_path, source="machine", stats=stats)
        if p.source.id in originals
    ]
    assert len(pairs) == 4 and stats.skipped["missing_translation"] == len(task.load("train", "en", data_dir)) - 4
    pair = pairs[0]
    assert pair.kind == "machine" and pair.source == originals[pair.source.id] and pair.target.language == "fi"
    assert pair.target.fields["context"].startswith("Kontext: ")


def test_translate_test_pairs_default_direction(tmp_path, data_dir):
    task = get_task("nusax")
    targets = task.load("test", "jav", data_dir)
    rows = [{"id": ex.id, "text": f"english of {ex.id}"} for ex in targets]
    write_translations(tmp_path, "nusax", "test", "jav", "eng", rows)
    pairs = task.load_pairs("test", "jav", data_dir, tmp_path, source="machine")
    assert len(pairs) == 400
    assert pairs[0].target == targets[0]  # original target kept
    assert pairs[0].source.fields["text"] == f"english of {targets[0].id}" and pairs[0].source.language == "eng"
    assert pairs[0].source.label == targets[0].label and pairs[0].kind == "machine"


def test_machine_pairs_validation_uses_english_originals(tmp_path, data_dir):
    task = get_task("nusax")
    english = task.load("valid", "eng", data_dir)
    write_translations(
        tmp_path, "nusax", "valid", "eng", "sun", [{"id": ex.id, "text": "mt " + ex.fields["text"]} for ex in english]
    )
    pairs = task.load_pairs("valid", "sun", data_dir, tmp_path, source="machine")
    assert [p.source for p in pairs] == english and all(p.target.fields["text"].startswith("mt ") for p in pairs)


def test_translation_with_unknown_id_raises(tmp_path, data_dir):
    write_translations(tmp_path, "nusax", "test", "jav", "eng", [{"id": "99999", "text": "x"}])
    with pytest.raises(FlareError) as err:
        get_task("nusax").load_pairs("test", "jav", data_dir, tmp_path, source="machine")
    assert_one_line(err, "jav-eng.jsonl", "99999")


def test_translation_files_are_utf8_with_an_optional_byte_order_mark(tmp_path, data_dir):
    path = write_translations(tmp_path, "nusax", "test", "jav", "eng", [{"id": "411", "text": "good"}])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Windows editors save it
    pairs = get_task("nusax").load_pairs("test", "jav", data_dir, tmp_path, source="machine")
    assert [pair.source.fields["text"] for pair in pairs] == ["good"]
    path.write_bytes(b'{"id": "411", "text": "caf\xe9"}\n')
    with pytest.raises(FlareError) as err:
        read_translations(path)
    assert_one_line(err, "jav-eng.jsonl: line 1 is not UTF-8 text (byte 0xe9)")
    path.with_name("jav-eng.meta.json").write_text('{"model": ')
    with pytest.raises(FlareError) as err:
        read_translation_meta(path)
    assert_one_line(err, "jav-eng.meta.json: line 1 is not valid JSON")


def test_names_that_become_paths_stay_inside_their_folder(tmp_path):
    for parts in (("../../escaped", "test"), ("nusax", "../test"), ("nusax", "a/b")):
        with pytest.raises(FlareError, match="cannot name a folder"):
            translation_path(tmp_path, *parts, "jav", "eng")
    with pytest.raises(FlareError, match=r"language '\.\.' cannot name a folder"):
        translation_path(tmp_path, "nusax", "test", "..", "eng")
    name = "toy-sentiment_v1.2"
    assert translation_path(tmp_path, name, "dev", "en", "de").parent == tmp_path / name / "dev"


def test_translation_missing_field_or_bad_projection_raises(tmp_path, data_dir):
    write_translations(tmp_path, "nusax", "test", "jav", "eng", [{"id": "411", "txt": "x"}])
    with pytest.raises(FlareError) as err:
        get_task("nusax").load_pairs("test", "jav", data_dir, tmp_path, source="machine")
    assert_one_line(err, "jav-eng.jsonl", "411", "'text'")
    ex = get_task("tydiqa").load("dev", "sw", data_dir)[0]
    bad = {
        "id": ex.id, "question": "q?", "context": "some english text",
        "answers": {"text": ["text"], "answer_start": [0]},
    }
    write_translations(tmp_path, "tydiqa", "dev", "sw", "en", [bad])
    with pytest.raises(FlareError) as err:
        get_task("tydiqa").load_pairs("dev", "sw", data_dir, tmp_path)
    assert_one_line(err, "sw-en.jsonl", ex.id, "does not match the context at offset 0")


def test_machine_pairs_need_translation_dir_and_gold_needs_parallel(data_dir, tmp_path):
    with pytest.raises(FlareError, match="translations_dir"):
        get_task("tydiqa").load_pairs("dev", "sw", data_dir)
    with pytest.raises(FlareError, match="no gold parallel"):
        get_task("tydiqa").load_pairs("dev", "sw", data_dir, source="gold")
    with pytest.raises(FlareError, match="translation file not found"):
        get_task("nusax").load_pairs("test", "jav", data_dir, tmp_path, source="machine")


# --- bad input -------------------------------------------------------------------------------------


def fake_nusax(root: Path, language: str, split: str, text: str) -> Path:
    path = root / "nusax-senti" / language / f"{split}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_column(tmp_path):
    fake_nusax(tmp_path, "jav", "test", "id,sentence,label\n1,apik,positive\n")
    with pytest.raises(FlareError) as err:
        get_task("nusax").load("test", "jav", tmp_path)
    assert_one_line(err, "jav/test.csv", "missing column(s) text")


def test_unknown_label(tmp_path):
    fake_nusax(tmp_path, "jav", "test", "id,text,label\n1,apik,positive\n2,elek,negatif\n")
    with pytest.raises(FlareError) as err:
        get_task("nusax").load("test", "jav", tmp_path)
    assert_one_line(err, "jav/test.csv", "row 2", "unknown label 'negatif'")


def test_empty_text(tmp_path):
    fake_nusax(tmp_path, "jav", "test", 'id,text,label\n1,apik,positive\n2,"  ",negative\n')
    with pytest.raises(FlareError) as err:
        get_task("nusax").load("test", "jav", tmp_path)
    assert_one_line(err, "row 2", "'text' is empty")
    xnli = tmp_path / "xnli" / "dev-de.tsv"
    xnli.parent.mkdir()
    xnli.write_text("Ein Satz.\t\tneutral\n", encoding="utf-8")
    with pytest.raises(FlareError) as err:
        get_task("xnli").load("dev", "de", tmp_path)
    assert_one_line(err, "dev-de.tsv", "row 1", "'hypothesis' is empty")


def test_parallel_files_with_different_row_counts_or_ids(tmp_path):
    task = get_task("nusax")
    fake_nusax(tmp_path, "eng", "test", "id,text,label\n1,good,positive\n2,bad,negative\n")
    fake_nusax(tmp_path, "jav", "test", "id,text,label\n1,apik,positive\n")
    with pytest.raises(FlareError) as err:
        task.load_pairs("test", "jav", tmp_path)
    assert_one_line(err, "jav/test.csv", "1 rows", "has 2")
    fake_nusax(tmp_path, "jav", "test", "id,text,label\n1,apik,positive\n3,elek,negative\n")
    with pytest.raises(FlareError) as err:
        task.load_pairs("test", "jav", tmp_path)
    assert_one_line(err, "jav/test.csv", "row 2", "id '3'")
    fake_nusax(tmp_path, "jav", "test", "id,text,label\n1,apik,positive\n2,elek,neutral\n")
    with pytest.raises(FlareError) as err:
        task.load_pairs("test", "jav", tmp_path)
    assert_one_line(err, "row 2", "label 1", "has 0")


def test_tydiqa_offset_mismatch(tmp_path):
    path = tmp_path / "tydiqa-goldp" / "sw" / "dev.json"
    path.parent.mkdir(parents=True)
    qa = {"id": "swahili-1", "question": "Nani?", "answers": [{"text": "Juma", "answer_start": 2}]}
    data = {"data": [{"title": "t", "paragraphs": [{"context": "Ni Juma.", "qas": [qa]}]}]}
    path.write_text(__import__("json").dumps(data))
    with pytest.raises(FlareError) as err:
        get_task("tydiqa").load("dev", "sw", tmp_path)
    assert_one_line(err, "sw/dev.json", "swahili-1", "'Juma' does not match the context at offset 2")


def test_qa_question_without_answer_is_skipped_and_counted(tmp_path):
    path = tmp_path / "q.json"
    path.write_text('{"data": [{"paragraphs": [{"context": "Ni Juma.", "qas": ['
                    '{"id": "a", "question": "Nani?", "answers": [{"text": "Juma", "answer_start": 3}]},'
                    '{"id": "b", "question": "Lini?", "answers": []}]}]}]}', encoding="utf-8")
    stats = LoadStats()
    examples = read_squad_json(path, "sw", stats)
    assert [ex.id for ex in examples] == ["a"] and stats.skipped == {"no_answer": 1}
    assert examples[0] == Example(
        "a", "sw", {"question": "Nani?", "context": "Ni Juma."}, None, {"text": ["Juma"], "answer_start": [3]}
    )


def test_unknown_language_and_split(data_dir):
    with pytest.raises(FlareError) as err:
        get_task("nusax").load("test", "en", data_dir)
    assert_one_line(err, "nusax", "'en'", "eng")
    with pytest.raises(FlareError) as err:
        get_task("tydiqa").load("train", "ar", data_dir)
    assert_one_line(err, "no split 'train' for ar")
    with pytest.raises(FlareError):
        get_task("xnli").load_pairs("dev", "en", data_dir)


# --- Hub fallback (offline: the Hub call itself is replaced by an in-memory dataset) -------------


def test_hub_fallback_only_when_local_files_are_absent(tmp_path, monkeypatch, data_dir):
    import datasets

    import flare.data.hub

    calls = []
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})

    def fake_load(path, config, split):
        calls.append((path, config, split))
        return datasets.Dataset.from_dict(
            {"premise": ["p0", "p1"], "hypothesis": ["h0", "h1"], "label": [2, 0]}, features=features
        )

    monkeypatch.setattr(flare.data.hub, "_load", fake_load)
    examples = get_task("xnli").load("train", "en", tmp_path)  # no train-en.tsv anywhere
    assert calls == [("facebook/xnli", "en", "train")]
    assert [(e.id, e.label, e.fields["premise"]) for e in examples] == [("0", 2, "p0"), ("1", 0, "p1")]
    get_task("xnli").load("dev", "en", data_dir)
    assert len(calls) == 1  # local files win


def test_hub_tydiqa_filters_by_language_and_checks_offsets(monkeypatch):
    import datasets

    import flare.data.hub

    rows = {"id": ["swahili-1", "english-2", "swahili-3"], "question": ["Nani?", "Who?", "Wapi?"],
            "context": ["Ni Juma.", "It is Ann.", "Ni Dar."],
            "answers": [{"text": ["Juma"], "answer_start": [3]}, {"text": ["Ann"], "answer_start": [6]},
                        {"text": ["Dar"], "answer_start": [0]}]}
    monkeypatch.setattr(flare.data.hub, "_load", lambda *a: datasets.Dataset.from_dict(rows))
    with pytest.raises(FlareError, match="swahili-3: answer 0 'Dar' does not match"):
        flare.data.hub.load_from_hub("tydiqa", "dev", "sw", [])
    rows["answers"][2] = {"text": ["Dar"], "answer_start": [3]}
    assert [e.id for e in flare.data.hub.load_from_hub("tydiqa", "dev", "sw", [])] == ["swahili-1", "swahili-3"]
