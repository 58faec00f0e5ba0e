"""Stage-2 sweeps in one study folder: another stage-2 learning rate or epoch count reuses the
folder's stage-1 model and adds runs beside the recorded ones, each named by what it changes."""

import json
from dataclasses import replace

import pytest
import yaml

from flare.cli import main
from flare.study.pipeline import compare
from flare.study.predict import predict_texts
from tiny_study import save_tiny_encoder, toy_study


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return save_tiny_encoder(tmp_path_factory.mktemp("encoder") / "model")


def _records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_a_stage2_sweep_point_lives_beside_the_recorded_runs(encoder, tmp_path, capsys):
    out = tmp_path / "out"
    study = toy_study(encoder, out)
    compare(study)
    stage1 = (out / "stage1" / "model" / "model.safetensors").stat().st_mtime_ns
    base = {r["run_id"]: r for r in _records(out)}
    assert {r["variant"] for r in base.values()} == {None}

    study.stage2 = replace(study.stage2, learning_rate=1e-3, epochs=2)  # (toy_study shares one StageSettings)
    compare(study)
    assert (out / "stage1" / "model" / "model.safetensors").stat().st_mtime_ns == stage1  # not retrained
    records = _records(out)
    new = [r for r in records if r["run_id"] not in base]
    # zero-shot uses the stage-1 model as it is: only the trained method gets a sweep point
    assert [(r["method"], r["variant"]) for r in new] == [("flare", "learning_rate=0.001,epochs=2")]
    assert new[0]["label"] == "FLARE (add_relu) [stage2 learning_rate=0.001,epochs=2]"
    assert new[0]["stage2"]["learning_rate"] == 1e-3 and new[0]["stage2"]["epochs"] == 2
    folder = out / "runs" / "flare-add_relu+stage2-learning_rate-0.001+epochs-2" / "de" / "seed1"
    assert (folder / "adapter").is_dir() and (out / "runs/flare-add_relu/de/seed1/adapter").is_dir()
    assert {r["run_id"]: r for r in records if r["run_id"] in base} == base  # recorded runs untouched
    recorded = yaml.safe_load((out / "study.yaml").read_text())
    assert recorded["stage2"]["learning_rate"] == 2e-3  # the folder's own settings stay the base
    assert "[stage2 learning_rate=0.001,epochs=2]" in (out / "results.md").read_text()

    compare(study)  # resuming the sweep point runs nothing again
    assert len(_records(out)) == len(records)
    # predict with the sweep point's settings reads its adapter; the base settings read the base one
    texts = ["Das Essen war wunderbar.", "Die Suppe war kalt."]
    details: list = []
    predict_texts(study, "de", texts, texts, details=details)
    study.stage2 = replace(study.stage2, learning_rate=2e-3, epochs=1)
    base_details: list = []
    predict_texts(study, "de", texts, texts, details=base_details)
    assert [d["probabilities"] for d in details] != [d["probabilities"] for d in base_details]


def test_other_settings_are_still_refused_and_flare_train_joins_a_sweep(encoder, tmp_path, capsys):
    out = tmp_path / "out"
    study = toy_study(encoder, out)
    compare(study)
    path = tmp_path / "study.yaml"
    from flare.study.settings import study_to_dict

    path.write_text(yaml.safe_dump(study_to_dict(study)), encoding="utf-8")
    assert main(["compare", str(path), "--stage1.learning_rate", "1e-4"]) == 2
    assert "holds runs made with other settings: stage1.learning_rate" in capsys.readouterr().err
    assert main(["train", str(path), "--method", "flare", "--language", "de", "--stage2.epochs", "2"]) == 0
    record = _records(out)[-1]
    assert (record["variant"], record["label"]) == ("epochs=2", "FLARE (add_relu) [stage2 epochs=2]")
