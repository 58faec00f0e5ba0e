"""English sides in a study (issue 18): the train x test matrix, one training per train side, the
translate-train + English control, records and report rows, checks before any work."""

from __future__ import annotations

import json

import pytest

import flare.study.pipeline as pipeline
from flare.cli import main
from flare.data.examples import Pair
from flare.data.tasks import get_task
from flare.study.pipeline import compare
from flare.study.runs import plan
from flare.study.settings import AdapterSettings, DataSettings, StageSettings, Study
from tiny_models import save_encoder


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory, data_dir):
    task = get_task("nusax")
    texts = ["negative", "neutral", "positive"] + [
        e.fields["text"] for lang in ("eng", "jav") for split in ("train", "valid", "test")
        for e in task.load(split, lang, data_dir)[:16]
    ]
    return save_encoder(tmp_path_factory.mktemp("encoder"), texts)


def _study(model, out, data_dir, methods, train_english, test_english, **data) -> Study:
    stage = StageSettings(epochs=1, batch_size=8, learning_rate=2e-3, eval_batch_size=16, tensorboard=False)
    return Study(task="nusax", model=str(model), languages=["jav"], methods=methods, fusions=["add_relu"], seeds=[1],
                 output_dir=str(out), stage1=stage, stage2=stage,
                 data=DataSettings(data_dir=str(data_dir), max_train=16, max_valid=8, max_test=12, max_length=24,
                                   train_english=train_english, test_english=test_english, **data))


def _spy(monkeypatch, name):
    calls = []
    original = getattr(pipeline, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, name, spy)
    return calls


def test_the_matrix_trains_once_per_train_side_and_labels_every_cell(tiny_encoder, tmp_path, data_dir, monkeypatch):
    fits, evaluations = _spy(monkeypatch, "fit"), _spy(monkeypatch, "predict_items")
    methods = ["translate-test", "translate-train", "translate-train+english", "flare"]
    study = _study(tiny_encoder, tmp_path / "s", data_dir, methods, ["gold", "lexicon"], ["gold", "self"])
    records = [json.loads(line) for line in compare(study).read_text().splitlines()]
    cells = {(r["method"], r["train_english"], r["test_english"]) for r in records}
    assert cells == {
        ("translate-test", None, "gold"), ("translate-test", None, "self"), ("translate-train", None, None),
        ("translate-train+english", "gold", None), ("translate-train+english", "lexicon", None),
        *{("flare", train, test) for train in ("gold", "lexicon") for test in ("gold", "self")},
    }
    assert len(fits) == 1 + 1 + 2 + 2  # stage 1, LoRA, two LoRA + English, two FLARE (not four)
    by_cell = {(r["method"], r["train_english"], r["test_english"]): r for r in records}
    # gold sides keep the run ids and labels of studies made before English sides existed
    assert by_cell["flare", "gold", "gold"]["run_id"] == "nusax/flare-add_relu/jav/seed1"
    assert by_cell["flare", "lexicon", "self"]["label"] == "FLARE (add_relu) [train lexicon, test self]"
    assert by_cell["flare", "lexicon", "self"]["run_id"] == "nusax/flare-add_relu+train-lexicon/jav/seed1/test-self"
    assert len({r["label"] for r in records}) == len(records)
    # the reused adapter reports its training
    assert by_cell["flare", "gold", "self"]["steps"] == by_cell["flare", "gold", "gold"]["steps"]
    # the control sees twice the training examples: the target sentences and their English sides
    steps = {m: by_cell[m, "gold" if m.endswith("english") else None, None]["steps"]
             for m in ("translate-train", "translate-train+english")}
    assert steps["translate-train+english"] == 2 * steps["translate-train"]
    # the test side reaches evaluation: self puts the target text in the English slot
    tested = [args[2] for args in evaluations if isinstance(args[2][0], Pair)]
    assert any(all(p.source.fields == p.target.fields for p in items) for items in tested)
    report = (tmp_path / "s" / "results.md").read_text()
    assert "| translate-train + English (LoRA) [train lexicon] |" in report
    assert "| translate-test [test self] |" in report
    assert compare(study) and len(fits) == 6  # all recorded: nothing runs again


def test_a_reused_adapter_scores_as_the_freshly_trained_one(tiny_encoder, tmp_path, data_dir):
    both = _study(tiny_encoder, tmp_path / "a", data_dir, ["flare"], ["noise30"], ["gold", "shuffled"])
    alone = _study(tiny_encoder, tmp_path / "b", data_dir, ["flare"], ["noise30"], ["shuffled"])
    reused, fresh = (
        next(json.loads(x) for x in compare(s).read_text().splitlines() if json.loads(x)["test_english"] == "shuffled")
        for s in (both, alone)
    )
    assert reused["metrics"] == fresh["metrics"]


def test_a_gated_run_records_where_training_left_its_english_gates(tiny_encoder, tmp_path, data_dir):
    study = _study(tiny_encoder, tmp_path / "s", data_dir, ["translate-train", "flare"], ["gold"], ["gold", "lexicon"])
    study.adapter = AdapterSettings(english_gate=True)
    records = {(r["method"], r["test_english"]): r for r in map(json.loads, compare(study).read_text().splitlines())}
    gate = records["flare", "gold"]["english_gate"]
    assert gate["min"] <= gate["mean"] <= gate["max"] and gate != {"min": 1.0, "mean": 1.0, "max": 1.0}  # trained
    assert records["flare", "lexicon"]["english_gate"] == gate  # the reused adapter's
    assert "english_gate" not in records["translate-train", None]  # LoRA has no English to gate


def test_a_study_grows_by_english_sides(tiny_encoder, tmp_path, data_dir):
    compare(_study(tiny_encoder, tmp_path / "s", data_dir, ["flare"], ["gold"], ["gold"]))
    grown = _study(tiny_encoder, tmp_path / "s", data_dir, ["flare"], ["gold"], ["gold", "noise50"])
    assert [r.key for r in plan(grown)] == ["flare-add_relu/jav/seed1", "flare-add_relu/jav/seed1/test-noise50"]
    records = compare(grown).read_text().splitlines()
    assert len(records) == 2


def test_flare_train_takes_the_english_sides_of_its_run(tiny_encoder, tmp_path, data_dir, capsys):
    out = tmp_path / "s"
    config = tmp_path / "study.yaml"
    data = {"data_dir": str(data_dir), "max_train": 16, "max_valid": 8, "max_test": 12, "max_length": 24}
    stage = {"epochs": 1, "batch_size": 8, "learning_rate": 2e-3, "eval_batch_size": 16}
    config.write_text(json.dumps({"task": "nusax", "model": str(tiny_encoder), "languages": ["jav"], "seeds": [1],
                                  "methods": ["flare"], "output_dir": str(out), "data": data, "stage1": stage,
                                  "stage2": stage}))
    flare = ["train", str(config), "--method", "flare", "--language", "jav"]
    assert main([*flare, "--train_english", "noise30", "--test_english", "shuffled"]) == 0, capsys.readouterr().err
    # translate-train reads no English: the sides do not apply to it
    assert main(["train", str(config), "--method", "translate-train", "--language", "jav",
                 "--train_english", "noise30"]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["method"], r["train_english"], r["test_english"]) for r in records] == [
        ("flare", "noise30", "shuffled"), ("translate-train", None, None)]
    assert records[0]["run_id"] == "nusax/flare-add_relu+train-noise30/jav/seed1/test-shuffled"
    # the same run as a study makes it: compare finds it recorded
    assert main(["compare", str(config), "--data.train_english", "[noise30]", "--data.test_english", "[shuffled]",
                 "--methods", "[flare]"]) == 0
    assert "2 runs already recorded, 0 to go" in capsys.readouterr().out
    assert main([*flare, "--train_english", "noise20"]) == 2
    assert "train_english 'noise20' is not one of gold, shuffled" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.test_english", "[gold, noise20]"], "data.test_english[1]: 'noise20' is not one of gold, shuffled"),
        (["--data.train_english", "[self, self]"], "data.train_english: 'self' is listed twice"),
        (["--data.train_english", "[]"], "data.train_english: the list is empty"),
        (["--data.test_english", "[lexicon]", "--data.lexicon_dir", "/nonexistent"],
         "/nonexistent/ind-jav.csv: lexicon file not found"),
        (["--data.train_english", "[shuffled]", "--data.max_valid", "1"], "'shuffled' needs at least 2 examples"),
    ],
)
def test_bad_english_side_settings_fail_before_any_work(tiny_encoder, tmp_path, data_dir, capsys, args, message):
    out = tmp_path / "s"
    config = tmp_path / "study.yaml"
    data = {"data_dir": str(data_dir), "max_train": 8, "max_test": 8, "max_length": 24}
    config.write_text(json.dumps({"task": "nusax", "model": str(tiny_encoder), "languages": ["jav"],
                                  "methods": ["flare"], "output_dir": str(out), "data": data}))
    assert main(["compare", str(config), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_flare_translate_has_the_lexicon_backend(tmp_path, data_dir, capsys):
    out = tmp_path / "translations"
    args = ["translate", "--task", "nusax", "--split", "valid", "--src_lang", "sun", "--tgt_lang", "eng",
            "--model", "nusax-lexicon", "--translations_dir", str(out), "--data_dir", str(data_dir)]
    assert main(args) == 0
    pairs = get_task("nusax").load_pairs("valid", "sun", data_dir, out, source="machine", machine_side="source")
    assert len(pairs) == 100 and pairs[0].source.fields["text"] != pairs[0].target.fields["text"]
    capsys.readouterr()
    wrong = tmp_path / "wrong"
    swapped = [*args[:5], "--src_lang", "eng", "--tgt_lang", "sun", *args[9:11], "--translations_dir", str(wrong),
               *args[13:]]
    assert main(swapped) == 2
    err = capsys.readouterr().err.strip()
    assert "the lexicon translates into English" in err and "\n" not in err
    assert not wrong.exists()
