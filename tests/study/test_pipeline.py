"""The study pipeline and CLI end to end on tiny random models and a few rows of real NusaX."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from flare.cli import main
from flare.data.tasks import get_task
from flare.hf.formats import FormatSettings, PairFormatter
from flare.mt.translate import DecodingSettings
from flare.study.pipeline import Pipeline, compare
from flare.study.runs import plan
from flare.study.settings import DataSettings, StageSettings, Study
from flare.study.training import fit
from tiny_models import save_encoder
from tiny_tokenizers import decoder_tokenizer

ALL = ["zero-shot", "translate-test", "translate-train", "input-fusion", "flare"]


def _texts(data_dir):
    task = get_task("nusax")
    words = ["Sentiment", ":", "negative", "neutral", "positive"]
    return words + [e.fields["text"] for lang in ("eng", "jav", "sun") for split in ("train", "valid", "test")
                    for e in task.load(split, lang, data_dir)[:24]]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory, data_dir):
    return save_encoder(tmp_path_factory.mktemp("encoder"), _texts(data_dir))


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory, data_dir):
    tok = decoder_tokenizer(_texts(data_dir))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    path = tmp_path_factory.mktemp("decoder")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _study(model, out, data_dir, **overrides) -> Study:
    stage = StageSettings(epochs=2, batch_size=8, learning_rate=2e-3, eval_batch_size=16)
    values = dict(task="nusax", model=str(model), languages=["jav", "sun"], methods=ALL, fusions=["add_relu"],
                  seeds=[1], output_dir=str(out),
                  data=DataSettings(data_dir=str(data_dir), max_train=16, max_valid=8, max_test=12, max_length=24),
                  stage1=stage, stage2=stage)
    return Study(**{**values, **overrides})


@pytest.mark.parametrize("model", ["tiny_encoder", "tiny_decoder"])
def test_compare_runs_every_method_for_two_languages_and_writes_the_report(model, request, tmp_path, data_dir):
    study = _study(request.getfixturevalue(model), tmp_path / "study", data_dir)
    results = compare(study)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert {(r["method"], r["language"]) for r in records} == {(m, lang) for m in ALL for lang in ("jav", "sun")}
    assert all(r["n_test"] == 12 and 0 <= r["score"] <= 100 and r["metric"] == "macro_f1" for r in records)
    assert all(r["wall_time_s"] > 0 and r["torch_threads"] == torch.get_num_threads() for r in records)
    assert "| method | runs | median | total |" in (tmp_path / "study" / "results.md").read_text()
    for name in ("results.csv", "results.md", "results.png", "study.yaml", "stage1/model/config.json"):
        assert (tmp_path / "study" / name).is_file(), name
    assert "FLARE (add_relu)" in (tmp_path / "study" / "results.md").read_text()
    assert (tmp_path / "study/runs/flare-add_relu/jav/seed1/adapter/flare_config.json").is_file()
    assert not (tmp_path / "study/runs/flare-add_relu/jav/seed1/checkpoint").exists()  # recorded runs drop resume state


def test_rerun_skips_recorded_runs_and_continues_after_an_interruption(tiny_encoder, tmp_path, data_dir, monkeypatch):
    study = _study(
        tiny_encoder, tmp_path / "study", data_dir, methods=["zero-shot", "flare"], languages=["jav"], seeds=[1, 2]
    )
    original = Pipeline.run
    calls = []

    def interrupted(self, run, stage1_model):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(run)
        return original(self, run, stage1_model)

    monkeypatch.setattr(Pipeline, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compare(study)
    first = (tmp_path / "study" / "results.jsonl").read_text().splitlines()
    assert len(first) == 2
    monkeypatch.setattr(Pipeline, "run", original)
    executed = []
    monkeypatch.setattr(Pipeline, "run", lambda self, run, d: executed.append(run) or original(self, run, d))
    compare(study)
    lines = (tmp_path / "study" / "results.jsonl").read_text().splitlines()
    assert lines[:2] == first and len(lines) == len(plan(study)) == 3
    assert [(r.method, r.seed) for r in executed] == [("flare", 2)]


def test_training_resumed_from_a_checkpoint_ends_where_an_uninterrupted_run_ends(tiny_encoder, tmp_path, data_dir):
    task = get_task("nusax")
    pairs = task.load_pairs("train", "jav", data_dir)[:24]
    settings = StageSettings(epochs=3, batch_size=8, learning_rate=1e-3)

    def trained(run_dir, stop=None):
        from flare.hf.loading import adapt, flare_config, load_backbone

        backbone, tok, family = load_backbone(str(tiny_encoder), task, seed=0)
        adapter = _study(tiny_encoder, tmp_path, data_dir).adapter.flare_kwargs()
        model = adapt(backbone, flare_config(adapter, task, family))
        formatter = PairFormatter(task, tok, family, "flare", FormatSettings(max_length=24))
        fit(model, pairs, formatter, settings, seed=3, run_dir=run_dir, stop_after_steps=stop)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    reference = trained(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        trained(tmp_path / "resumed", stop=5)  # mid-epoch 2: epoch 1 is checkpointed
    assert json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())["epoch"] == 1
    resumed = trained(tmp_path / "resumed")
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), name


@pytest.mark.parametrize("args,message", [
    (["--methods", "[flarex]"], "methods[0]: 'flarex' is not one of zero-shot"),
    (["--languages", "[xx]"], "task nusax has no language 'xx'"),
    (["--fusions", "[concat]"], "fusions[0]: 'concat' is not one of add"),
    (["--model", "/no/such/model"], "model: /no/such/model is not a model directory"),
    (["--stage2.learning_rate", "fast"], "stage2.learning_rate"),
])
def test_invalid_settings_fail_before_any_work_with_one_line(tmp_path, capsys, args, message, data_dir):
    config = tmp_path / "study.yaml"
    config.write_text(
        f"task: nusax\nlanguages: [jav]\noutput_dir: {tmp_path / 'out'}\ndata: {{data_dir: {data_dir}}}\n"
    )
    assert main(["compare", str(config), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_api_and_the_cli_read_a_study_alike_and_help_shows_the_ranges(tmp_path, capsys, monkeypatch):
    """YAML 1.1 reads 1e-4 as a string; the project's loader reads it as the number it is, in
    load_study and on the command line alike, and --help shows every declared range."""
    from flare.study.settings import load_study

    config = tmp_path / "study.yaml"
    config.write_text(f"task: nusax\nlanguages: [jav]\noutput_dir: {tmp_path}\nstage1: {{learning_rate: 1e-4}}\n")
    seen = {}
    monkeypatch.setattr("flare.study.pipeline.compare", lambda study, minutes: seen.setdefault("s", study) and None)
    assert main(["compare", str(config), "--stage2.learning_rate", "2E-3"]) == 0
    assert load_study(config).stage1.learning_rate == seen["s"].stage1.learning_rate == 1e-4
    assert seen["s"].stage2.learning_rate == 2e-3
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:  # argparse's help exits
        main(["compare", "--help"])
    assert done.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for shown in ("LoRA rank (the bottleneck width in which the fusion happens). Range: >= 1 and <= 4096.",
                  "Range: each >= 0 and <= 4294967295.",
                  "batches summed into one optimizer step. Range: >= 1."):
        assert shown in help_text


def test_malformed_yaml_and_unknown_keys(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: nusax\nlanguages: [jav\n")
    assert main(["compare", str(bad)]) == 2
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("task: nusax\nlanguage: [jav]\n")
    assert main(["compare", str(unknown)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("flare: error:") for e in errors)


def test_cli_entry_point_runs_as_a_command(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "flare.cli", "report", str(tmp_path / "missing.jsonl")], capture_output=True, text=True
    )
    assert out.returncode == 2 and out.stderr.strip().startswith("flare: error:") and "Traceback" not in out.stderr


class _ReversingTranslator:
    """A translation backend that reverses the words: deterministic, non-empty."""

    settings = DecodingSettings()

    def __init__(self, model, *args, **kwargs):
        self.fingerprint = f"reverse:{model}"

    def translate_batch(self, texts, src, tgt):
        return [" ".join(reversed(t.split())) for t in texts]


def test_flare_mt_study_trains_the_projection_of_mt_encoder_states(
    tiny_encoder, tmp_path, tmp_path_factory, data_dir, monkeypatch
):
    from safetensors.torch import load_file
    from tiny_mt import shared_tiny_nllb

    mt_model = shared_tiny_nllb(tmp_path_factory, data_dir)
    study = _study(
        tiny_encoder, tmp_path / "study", data_dir, methods=["flare-mt"], languages=["jav"], mt_model=str(mt_model)
    )
    record = json.loads(compare(study).read_text().splitlines()[0])
    assert record["method"] == "flare-mt" and record["label"] == "FLARE-MT (add_relu)" and record["n_test"] == 12
    weights = load_file(tmp_path / "study/runs/flare-mt-add_relu/jav/seed1/adapter/flare_weights.safetensors")
    assert weights["source_projection.weight"].shape == (32, 32)  # NLLB width -> XLM-R width
    assert list((tmp_path / "study" / "mt_states").rglob("*.safetensors"))  # encoded once, kept for other seeds

    from flare.study.predict import predict_texts

    texts = ["Aku seneng banget", "Panganane ora enak"]
    labels = predict_texts(study, "jav", texts, None, method="flare-mt")
    assert len(labels) == 2 and set(labels) <= {"negative", "neutral", "positive"}
    # flare itself with the English side translated on the fly (a stand-in engine: the tiny random
    # model translates into empty strings, which predict refuses with one line)
    study.methods = ["flare"]
    compare(study)
    from flare.errors import FlareError

    with pytest.raises(FlareError, match="translated input 0 to empty text"):
        predict_texts(study, "jav", texts, None, method="flare")
    monkeypatch.setattr("flare.mt.translate.Seq2SeqTranslator", _ReversingTranslator)
    assert len(predict_texts(study, "jav", texts, None, method="flare")) == 2
    assert (tmp_path / "study/translations/translation_cache.sqlite").is_file()
    # `flare evaluate --test` on a user's file without English columns: translated the same way
    from flare.cli import evaluate as evaluate_command
    from flare.study.pipeline import Pipeline
    from flare.study.runs import Run

    own = tmp_path / "own.csv"
    own.write_text("text,label\nAku seneng banget,positive\nPanganane ora enak,negative\n", encoding="utf-8")
    pairs = Pipeline(study).data.test_file(own, Run("flare", "add_relu", "jav", 1))
    assert [p.source.fields["text"] for p in pairs] == ["banget seneng Aku", "enak ora Panganane"]
    adapter = tmp_path / "study/runs/flare-add_relu/jav/seed1/adapter"
    result = evaluate_command(study, "jav", "flare", str(adapter), str(own))
    assert (result["n_test"], result["test_file"]) == (2, str(own))


def test_flare_mt_needs_an_mt_model(tiny_encoder, tmp_path, data_dir):
    from flare.errors import FlareError

    with pytest.raises(FlareError, match="mt_model"):
        compare(_study(tiny_encoder, tmp_path / "study", data_dir, methods=["flare-mt"]))


def test_shipped_study_configs_are_valid():
    from pathlib import Path

    from flare.study.settings import load_study

    root = Path(__file__).resolve().parents[2]
    configs = (
        sorted((root / "benchmarks/reproduce").glob("*.yaml")) + sorted((root / "examples/studies").glob("*.yaml"))
    )
    assert len(configs) >= 12
    for path in configs:
        load_study(path).validate()  # tasks, languages, methods, fusions; hub ids are checked when loaded


def test_time_budget_stops_starting_new_runs(tiny_encoder, tmp_path, data_dir):
    study = _study(
        tiny_encoder, tmp_path / "study", data_dir, methods=["zero-shot", "translate-test"], languages=["jav"]
    )
    compare(study, time_budget_minutes=1e-9)  # spent before the first run
    assert not (tmp_path / "study" / "results.jsonl").exists()
    compare(study)
    assert len((tmp_path / "study" / "results.jsonl").read_text().splitlines()) == 2


def test_a_study_grows_between_chunks_but_never_changes_its_settings(tiny_encoder, tmp_path, data_dir):
    from flare.errors import FlareError

    study = _study(tiny_encoder, tmp_path / "study", data_dir, methods=["zero-shot"], languages=["jav"])
    compare(study)
    recorded = (tmp_path / "study" / "results.jsonl").read_text()
    # (stage-2 changes are sweep points of their own, tests/study/test_stage2_variants.py)
    changed = dataclasses.replace(study, stage1=dataclasses.replace(study.stage1, learning_rate=1e-4, epochs=5))
    with pytest.raises(FlareError, match=r"stage1.learning_rate: 0.002 -> 0.0001 \(and 1 more\)") as error:
        compare(changed)
    assert "\n" not in str(error.value) and (tmp_path / "study" / "results.jsonl").read_text() == recorded
    # more languages, methods and seeds, evaluation batching and another data folder: the same study
    grown = dataclasses.replace(
        study, languages=["jav", "sun"], methods=["zero-shot", "translate-test"], seeds=[1, 2],
        stage2=dataclasses.replace(study.stage2, eval_batch_size=4),
        data=dataclasses.replace(study.data, data_dir=str(data_dir) + "/"),
    )
    compare(grown)
    assert (tmp_path / "study" / "results.jsonl").read_text().startswith(recorded)
    assert len((tmp_path / "study" / "results.jsonl").read_text().splitlines()) == 4


def test_fit_refuses_an_unreadable_checkpoint_in_one_line(tmp_path):
    from flare.errors import FlareError

    model = torch.nn.Linear(2, 2)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text("{}")
    (tmp_path / "checkpoint" / "trainable.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(FlareError, match="unreadable training checkpoint") as error:
        fit(model, [], lambda items: {}, StageSettings(epochs=1), seed=1, run_dir=tmp_path)
    assert "\n" not in str(error.value)


def test_a_full_disk_while_saving_is_one_line_saying_so(tmp_path, capsys, monkeypatch):
    """safetensors reports a full disk as a SafetensorError without errno: the CLI still says so."""
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, message: "No space left on device" })')

    monkeypatch.setattr("flare.cli.write_report", full)  # the CLI holds its own reference
    results = tmp_path / "results.jsonl"
    results.write_text("")
    assert main(["report", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flare: error: no space left on the device while writing") and len(err.splitlines()) == 1


def test_predict_text_files_drop_the_byte_order_mark(tmp_path):
    from flare.cli import _lines

    inputs = tmp_path / "inputs.txt"
    inputs.write_bytes("\ufeffapik tenan\n\nala\n".encode())
    assert _lines(str(inputs)) == ["apik tenan", "ala"]
    assert _lines("Aku seneng banget.") == ["Aku seneng banget."]  # text, not a file name


def test_compare_flags_a_run_that_predicts_one_class_and_prints_the_report(tiny_encoder, tmp_path, data_dir,
                                                                           monkeypatch, capsys):
    import flare.study.pipeline as pipeline_module

    real_predict = pipeline_module.predict_items

    def collapsed(model, formatter, items, *args, **kwargs):  # a model that says "negative" to everything
        return dict.fromkeys(real_predict(model, formatter, items, *args, **kwargs), 0)

    monkeypatch.setattr(pipeline_module, "predict_items", collapsed)
    results = compare(_study(tiny_encoder, tmp_path / "study", data_dir, languages=["jav"], methods=["zero-shot"]))
    record = json.loads(results.read_text().splitlines()[0])
    out = capsys.readouterr().out
    assert record["predicted_classes"] == 1
    assert "warning: zero-shot jav seed 1 predicted one class for every test example" in out
    assert (tmp_path / "study" / "results.md").read_text().rstrip() in out  # the report, printed at the end
