"""mid-align and x-mixup as rows of a study (issue 35): a tiny study end to end, saved adapters
scored and used by `flare predict` as recorded, and the settings they cannot use refused before
any work."""

from __future__ import annotations

import json

import pytest

import flare.study.predict as predict_module
from flare.cli import evaluate as evaluate_command
from flare.cli import main
from flare.errors import FlareError
from flare.hf.xmixup import uses_gold
from flare.study.pipeline import compare
from flare.study.predict import predict_texts
from flare.study.settings import StageSettings
from tiny_study import save_tiny_encoder, save_tiny_llama, toy_study


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return save_tiny_encoder(tmp_path_factory.mktemp("encoder") / "model")


@pytest.mark.slow
def test_a_tiny_study_runs_both_methods_and_their_adapters_predict_as_recorded(encoder, tmp_path, monkeypatch):
    out = tmp_path / "study"
    study = toy_study(encoder, out, methods=["translate-train", "x-mixup", "mid-align"])
    study.data.train_english, study.data.test_english = ["gold", "noise30"], ["gold", "noise30"]
    records = [json.loads(line) for line in compare(study).read_text().splitlines()]
    cells = {(r["method"], r["train_english"], r["test_english"]) for r in records}
    assert cells == {("translate-train", None, None), ("mid-align", "gold", None), ("mid-align", "noise30", None),
                     *{("x-mixup", train, test) for train in ("gold", "noise30") for test in ("gold", "noise30")}}
    by = {(r["method"], r["train_english"], r["test_english"]): r for r in records}
    sampling = by["x-mixup", "noise30", "gold"]["english_sampling"]
    assert sampling["machine_sides"] == ["noise30"] and sampling["k"] == 1000
    # 2 steps at the schedule's start: gold with probability 1000/1001 each (a draw of (seed, step))
    assert sampling["gold_steps"] == sum(uses_gold(1, step, 1000) for step in range(2)) and sampling["steps"] == 2
    assert by["x-mixup", "gold", "gold"]["english_sampling"]["machine_sides"] == []
    assert by["x-mixup", "noise30", "noise30"]["label"] == "X-Mixup (LoRA) [train noise30, test noise30]"
    assert by["mid-align", "gold", None]["alignment"] == {"layer": 1, "schedule": "alternate", "weight": None}
    assert "| X-Mixup (LoRA) [test noise30] |" in (out / "results.md").read_text()
    assert (out / "runs/x-mixup+train-noise30/de/seed1/adapter").is_dir()
    mixup_adapter = out / "runs/x-mixup/de/seed1/adapter"
    assert (mixup_adapter / "xmixup.json").is_file() and (mixup_adapter / "xmixup.safetensors").is_file()

    # saved adapters score as recorded (flare evaluate --adapter_dir)
    for method, key in (("x-mixup", ("x-mixup", "gold", "gold")), ("mid-align", ("mid-align", "gold", None))):
        result = evaluate_command(study, "de", method, str(out / f"runs/{method}/de/seed1/adapter"))
        assert result["metrics"] == by[key]["metrics"], method

    # flare predict: mid-align reads the target alone; x-mixup needs English and translates it when absent
    texts = ["Das Essen war wunderbar.", "Die Suppe war kalt."]
    labels = predict_texts(study, "de", texts, None, method="mid-align")
    assert len(labels) == 2 and set(labels) <= {"negative", "positive"}
    with pytest.raises(FlareError, match="x-mixup needs the English side"):
        predict_texts(study, "de", texts, None, method="x-mixup")
    english = ["The food was wonderful.", "The soup was cold."]
    given: list[dict] = []
    assert len(predict_texts(study, "de", texts, english, method="x-mixup", details=given)) == 2
    asked = []

    def stand_in_mt(columns, **kwargs):  # the English the user would have given, from a stand-in engine
        asked.append(columns)
        return [english]

    monkeypatch.setattr(predict_module, "translate_columns", stand_in_mt)
    study.mt_model = "stand-in"
    translated: list[dict] = []
    predict_texts(study, "de", texts, None, method="x-mixup", details=translated)
    assert asked == [[tuple(texts)]] and translated == given


def test_settings_the_methods_cannot_use_are_refused_before_any_work(encoder, tmp_path, capsys):
    stage = StageSettings(epochs=1, batch_size=8, eval_batch_size=8, mixup_layer=2)
    with pytest.raises(FlareError, match=r"stage2.mixup_layer: 2 is past the model's layers 0\.\.1"):
        compare(toy_study(encoder, tmp_path / "a", methods=["x-mixup"], stage2=stage))
    stage = StageSettings(epochs=1, batch_size=8, eval_batch_size=8, align_layer=3)
    with pytest.raises(FlareError, match=r"stage2\.align_layer: 3 is past the model's 2 layers"):
        compare(toy_study(encoder, tmp_path / "b", methods=["mid-align"], stage2=stage))
    llama = save_tiny_llama(tmp_path / "llama")
    with pytest.raises(FlareError, match="x-mixup is implemented for BERT / RoBERTa / XLM-R encoders, not llama"):
        compare(toy_study(llama, tmp_path / "c", methods=["x-mixup"]))
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))  # nothing written, nothing trained
    # from the command line: one line, exit 2 (QA has no English span labels for a machine English stream)
    capsys.readouterr()  # the tiny model's saving progress
    config = tmp_path / "qa.yaml"
    config.write_text(f"task: tydiqa\nlanguages: [fi]\nmethods: [x-mixup]\noutput_dir: {tmp_path / 'qa'}\n")
    assert main(["compare", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "x-mixup is implemented for classification tasks, not qa (tydiqa)" in err and len(err.splitlines()) == 1
    assert main(["compare", str(config), "--methods", "[mid-align]", "--stage2.align_schedule", "often"]) == 2
    assert "stage2.align_schedule" in capsys.readouterr().err
