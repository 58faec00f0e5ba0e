"""Bad inputs to every CLI command and Python entry point: each stops with a non-zero exit (CLI) or a
FlareError (Python), one line naming the problem (no traceback), and leaves no output behind.

One row per case in CASES. `build(c)` sets the case up in its own folder and returns the CLI
arguments or a zero-argument callable; afterwards no file under that folder may have been created,
changed or removed (the case's outputs all point there)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hostile_input_cases import HOSTILE_CASES

from flare.cli import main
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.study.report import report
from flare.study.settings import load_study

PROGRESS = re.compile(r"\d+%\|")  # tqdm bars (e.g. transformers' "Loading weights") are not messages
EN = "id,text,label\n1,good food,positive\n2,bad service,negative\n"
DE = "id,text,label\n1,gutes Essen,positive\n2,schlechter Service,negative\n"
JOINT_ROWS = ('{"text": "apik", "english_text": "good", "language": "jav"}\n'
              '{"text": "alus", "english_text": "good", "language": "sun"}\n')
PAYLOAD = "!!python/object/apply:os.system ['touch {}/pwned']"


def _encoder(path: Path, texts: list[str], hidden: int = 32) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from tiny_tokenizers import encoder_tokenizer

    tokenizer = encoder_tokenizer(texts)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=4, pad_token_id=0, max_position_embeddings=80)
    XLMRobertaModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _adapter(base: Path, directory: Path, languages: list[str] | None = None) -> None:
    from flare.hf.loading import adapt, flare_config, load_backbone
    from flare.study.settings import AdapterSettings

    task = get_task("nusax")
    backbone, _, family = load_backbone(str(base), task, seed=0)
    model = adapt(backbone, flare_config(AdapterSettings().flare_kwargs(), task, family, "add_relu"))
    model.save_pretrained(directory, languages=languages)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, data_dir):
    """A tiny encoder, a study folder with its stage-1 model and a flare adapter (untrained: only
    loading matters here), an adapter of a wider base model, and the tiny NLLB."""
    from tiny_mt import shared_tiny_nllb

    root = tmp_path_factory.mktemp("bad_inputs")
    task = get_task("nusax")
    texts = ["Sentiment", ":"] + [
        e.fields["text"] for lang in ("eng", "jav") for e in task.load("test", lang, data_dir)[:40]
    ]
    encoder = _encoder(root / "encoder", texts)
    shutil.copytree(encoder, root / "study/stage1/model")
    _adapter(root / "study/stage1/model", root / "study/runs/flare-add_relu/jav/seed1/adapter")
    _adapter(root / "study/stage1/model", root / "study/runs/flare-add_relu/joint/seed1/adapter", ["jav", "ban"])
    _adapter(_encoder(root / "wide", texts, hidden=48), root / "wide_adapter")
    return {"root": root, "encoder": encoder, "nllb": shared_tiny_nllb(tmp_path_factory, data_dir), "data": data_dir}


class Case:
    """The folder of one case and helpers that put bad files into it."""

    def __init__(self, tmp: Path, shared: dict) -> None:
        self.tmp, self.shared, self.data = tmp, shared, str(shared["data"])
        self.out = tmp / "out"

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def study(self, **settings) -> str:
        values = {"task": "nusax", "model": str(self.shared["encoder"]), "languages": ["jav"], "methods": ["flare"],
                  "output_dir": str(self.out),
                  "data": {"data_dir": self.data, "max_train": 8, "max_valid": 4, "max_test": 4, "max_length": 32}}
        return str(self.file("study.yaml", yaml.safe_dump({**values, **settings})))

    def trained(self) -> str:
        """A study YAML whose output folder holds a stage-1 model and a flare adapter (jav, seed 1)."""
        shutil.copytree(self.shared["root"] / "study", self.tmp / "study")
        return self.study(output_dir=str(self.tmp / "study"))

    def adapter(self) -> Path:
        return self.tmp / "study/runs/flare-add_relu/jav/seed1/adapter"

    def resumed_with(self, *overrides: str) -> list[str]:
        """`flare compare` on a study folder that holds runs, with settings overridden on the command line."""
        config = self.trained()
        shutil.copy(config, self.tmp / "study" / "study.yaml")  # the settings the folder's runs were made with
        return ["compare", config, *overrides]

    def predict(self, *args: str) -> list[str]:
        return ["predict", self.trained(), "--language", "jav", *args]

    def translate(self, *args: str, model: str | None = None) -> list[str]:
        return ["translate", "--task", "nusax", "--split", "test", "--src_lang", "jav", "--tgt_lang", "eng",
                "--model", model or str(self.shared["nllb"]), "--translations_dir", str(self.out),
                "--data_dir", self.data, *args]

    def task(self, de: str | bytes = DE, en: str = EN, suffix: str = "csv") -> str:
        self.file(f"en/test.{suffix}", en)
        self.file(f"de/test.{suffix}", de)
        spec = {"name": "toy", "type": "classification", "languages": ["en", "de"], "labels": ["negative", "positive"],
                "id_column": "id", "files": "{language}/{split}." + suffix, "splits": ["test"], "parallel": True}
        if suffix == "json":
            spec = {"name": "toy-qa", "type": "qa", "languages": ["en", "de"], "files": "{language}/{split}.json",
                    "splits": ["test"]}
        return str(self.file("task.yaml", yaml.safe_dump(spec)))

    def checkpoint(self) -> str:
        from safetensors.torch import save_file

        config = self.trained()
        directory = self.tmp / "study/runs/flare-add_relu/jav/seed1/checkpoint"
        directory.mkdir(parents=True)
        (directory / "state.json").write_text('{"epoch": 1, "step": 2}')
        for name in ("trainable", "optimizer", "rng"):
            save_file({"x": torch.zeros(64)}, directory / f"{name}.safetensors")
        path = directory / "trainable.safetensors"
        path.write_bytes(path.read_bytes()[:40])  # a truncated write
        return config

    def gpt2(self) -> str:
        from transformers import GPT2Config

        config = GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, bos_token_id=0, eos_token_id=0)
        config.save_pretrained(self.tmp / "gpt2")
        return str(self.tmp / "gpt2")

    def truncated_stage1(self) -> list[str]:
        """`flare predict` on a study whose stage-1 model.safetensors was cut short (a copy interrupted)."""
        args = self.predict("--text", "apik", "--english", "good")
        path = self.tmp / "study/stage1/model/model.safetensors"
        path.write_bytes(path.read_bytes()[:1000])
        return args

    def bad_adapter(self, how: str) -> list[str]:
        """`flare predict` with the run's adapter replaced by a pickle, truncated, or saved for a wider base."""
        from safetensors.torch import load_file

        args = self.predict("--text", "apik", "--english", "good")
        path = self.adapter() / "adapter_model.safetensors"
        if how == "pickle":
            torch.save(load_file(path), path.with_suffix(".bin"))  # a pickle where the weights belong
            path.unlink()
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[:100])
        else:
            shutil.copytree(self.shared["root"] / "wide_adapter", self.adapter(), dirs_exist_ok=True)
        return args


def _python(function, *args, **kwargs):
    return lambda: function(*args, **kwargs)


def _task(path: str, method: str, *args):
    return lambda: getattr(get_task(path), method)(*args)


def _translate_rows(c: Case, rows: list[dict], tgt: str = "eng"):
    from flare.mt.translate import translate_dataset

    return lambda: translate_dataset(rows, model=str(c.shared["nllb"]), src_lang="jav", tgt_lang=tgt, task="nusax",
                                     split="test", translations_dir=c.out, show_progress=False)


def _flare_model(kind: str, c: Case):
    import tiny_models
    from flare import get_flare_model, load_flare_model
    from flare.hf.loading import load_backbone

    if kind == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        return lambda: get_flare_model(GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=20)))
    if kind == "mismatch":
        return lambda: load_flare_model(
            load_backbone(str(c.shared["encoder"]), get_task("nusax"))[0], c.shared["root"] / "wide_adapter"
        )
    return lambda: load_flare_model(tiny_models.xlmr_classifier(), c.tmp / "nothing")


def _report(c: Case, content: str | bytes, *args: str) -> list[str]:
    return ["report", str(c.file("results.jsonl", content)), *args]


RECORD = (
    '{"run_id": "nusax/flare/jav/seed1", "task": "nusax", "method": "flare", "label": "FLARE", "language": "jav", '
    '"seed": 1, "metric": "macro_f1", "score": 50.0}\n'
)

CASES = [  # id, the CLI command or "python", what the one line must say, set-up
    # study YAML and settings (compare, train, evaluate)
    ("yaml-malformed", "compare", r"s.yaml: line 3 is not valid YAML \(expected ',' or ']'",
     lambda c: ["compare", str(c.file("s.yaml", "task: nusax\nlanguages: [jav\n"))]),
    ("yaml-nul-character", "compare", r"output_dir: 'out\\x00x' contains a NUL character",
     lambda c: ["compare", str(c.file("s.yaml", 'task: nusax\noutput_dir: "out\\u0000x"\n'))]),
    ("yaml-raw-nul-byte", "compare", r"s.yaml: line 2 holds the control character U\+0000",
     lambda c: ["compare", str(c.file("s.yaml", b"task: nusax\noutput_dir: out\x00x\n"))]),
    ("yaml-utf16", "compare", r"is UTF-16 text",
     lambda c: ["compare", str(c.file("s.yaml", "task: nusax\n".encode("utf-16")))]),
    ("study-resumed-with-other-settings", "compare", r"holds runs made with other settings: stage1.learning_rate: "
     r"0.0005 -> 0.0001; use a new output_dir", lambda c: c.resumed_with("--stage1.learning_rate", "1e-4")),
    ("study-resumed-with-another-first-seed", "train", r"first seed \(it trains stage 1\): 1 -> 2",
     lambda c: ["train", *c.resumed_with("--seeds", "[2]")[1:], "--method", "flare", "--language", "jav",
                "--seed", "2"]),
    ("max-length-beyond-positions", "compare", r"input-fusion reads 2 x data.max_length = 96 tokens, more than "
     r"the 79 positions .*encoder can embed; lower data.max_length",
     lambda c: ["compare", c.study(methods=["flare", "input-fusion"], data={"data_dir": c.data, "max_length": 48})]),
    ("yaml-latin1", "compare", r"line 2 is not UTF-8 text",
     lambda c: ["compare", str(c.file("s.yaml", "task: nusax\noutput_dir: r\xe9sultats\n".encode("latin-1")))]),
    ("yaml-python-tag", "compare", r"could not determine a constructor for the tag .*python/object/apply",
     lambda c: ["compare", str(c.file("s.yaml", f"task: nusax\nmodel: {PAYLOAD.format(c.tmp)}\n"))]),
    ("yaml-not-a-mapping", "train", r"must be a YAML mapping",
     lambda c: ["train", str(c.file("s.yaml", "- jav\n- sun\n")), "--method", "flare", "--language", "jav"]),
    ("yaml-unknown-key", "compare", r"languagez", lambda c: ["compare", c.study(languagez=["jav"])]),
    ("unknown-task", "compare", r"unknown task 'sentiment'", lambda c: ["compare", c.study(task="sentiment")]),
    ("unknown-method", "compare", r"methods\[0\]: 'flarex' is not one of zero-shot,",
     lambda c: ["compare", c.study(methods=["flarex"])]),
    ("unknown-fusion", "compare", r"fusions\[0\]: 'concat' is not one of add,",
     lambda c: ["compare", c.study(fusions=["concat"])]),
    ("unknown-language", "compare", r"task nusax has no language 'xx'",
     lambda c: ["compare", c.study(languages=["xx"])]),
    ("model-missing", "compare", r"model: .*/no/such/model is not a model directory",
     lambda c: ["compare", c.study(model=str(c.tmp / "no/such/model"))]),
    ("model-not-a-model", "compare", r"cannot load a config",
     lambda c: ["compare", c.study(model=str(c.file("junk/config.json", "{oops").parent))]),
    ("model-no-query-value", "compare", r"cannot tell which modules of GPT2LMHeadModel",
     lambda c: ["compare", c.study(model=c.gpt2())]),
    ("target-modules-match-nothing", "compare", r"target_modules \['qkv'\] match no module",
     lambda c: ["compare", c.study(adapter={"target_modules": ["qkv"]})]),
    ("output-dir-under-a-file", "compare", r"output_dir: cannot create .*afile/out",
     lambda c: ["compare", c.study(output_dir=str(c.file("afile", "x") / "out"))]),
    ("data-dir-missing", "compare", r"data_dir .*nodata is not a directory",
     lambda c: ["compare", c.study(data={"data_dir": str(c.tmp / "nodata"), "max_length": 32})]),
    ("checkpoint-truncated", "compare", r"resume checkpoint .*trainable.safetensors is missing or corrupt.*delete",
     lambda c: ["compare", c.checkpoint()]),
    ("train-unknown-method", "train", r"unknown method 'flarex'",
     lambda c: ["train", c.study(), "--method", "flarex", "--language", "jav"]),
    ("train-unknown-language", "train", r"has no language 'xx'",
     lambda c: ["train", c.study(), "--method", "flare", "--language", "xx"]),
    ("evaluate-trained-method", "evaluate", r"evaluate: method must be zero-shot or translate-test",
     lambda c: ["evaluate", c.study(), "--language", "jav", "--method", "flare"]),
    # translate
    ("translate-unknown-language-code", "translate", r"unknown language code 'xx'",
     lambda c: c.translate("--tgt_lang", "xx")),
    ("translate-language-nllb-lacks", "translate", r"'mad' \(Madurese\) is not covered by NLLB-200",
     lambda c: c.translate("--src_lang", "mad")),
    ("translate-model-missing", "translate", r"MT model .*nomodel: not a model directory",
     lambda c: c.translate(model=str(c.tmp / "nomodel"))),
    ("translate-model-not-mt", "translate", r"xlm-roberta model is not an encoder-decoder",
     lambda c: c.translate(model=str(c.shared["encoder"]))),
    ("translate-dir-under-a-file", "translate", r"cannot create it \(Not a directory\)",
     lambda c: c.translate("--translations_dir", str(c.file("afile", "x") / "tr"))),
    ("translate-corrupt-cache", "translate", r"translation_cache.sqlite: unusable \(file is not a database\)",
     lambda c: c.translate("--translations_dir", str(c.file("tr/translation_cache.sqlite", b"\x00junk" * 200).parent))),
    # predict
    ("predict-planted-pickle", "predict", r"only safetensors adapters are loaded, never pickles",
     lambda c: c.bad_adapter("pickle")),
    ("predict-truncated-adapter", "predict", r"cannot read adapter_model.safetensors as safetensors",
     lambda c: c.bad_adapter("truncate")),
    ("predict-adapter-of-another-base", "predict", r"cannot load the adapter in .*size mismatch",
     lambda c: c.bad_adapter("wide")),
    ("predict-truncated-stage1-model", "predict", r"stage1/model/model.safetensors: not a readable safetensors file",
     lambda c: c.truncated_stage1()),
    ("predict-whitespace-text", "predict", r"input 0: field 'text' is empty",
     lambda c: c.predict("--text", "   ", "--english", "good")),
    ("predict-latin1-file", "predict", r"not UTF-8 text",
     lambda c: c.predict("--text", str(c.file("in.txt", "apik \xe9\n".encode("latin-1"))), "--english", "good")),
    ("predict-english-count", "predict", r"2 inputs but 1 English translations",
     lambda c: c.predict("--text", str(c.file("in.txt", "apik\nala\n")), "--english", "good")),
    ("predict-language-the-joint-adapter-lacks", "predict",
     r"input 1 is in sun, which .*joint/seed1/adapter was not trained on \(jav, ban\); pass --allow_other_languages",
     lambda c: ["predict", c.trained(), "--joint_adapter", "true", "--text", str(c.file("in.jsonl", JOINT_ROWS))]),
    ("predict-mixed-languages-without-joint", "predict", r"inputs are in 2 languages \(jav, sun\).*--joint_adapter",
     lambda c: ["predict", c.trained(), "--text", str(c.file("in.jsonl", JOINT_ROWS))]),
    # joint studies
    ("joint-language-without-english-at-test", "compare",
     r"joint: jav has no English side at test time, which flare reads \(.*\); give its translations",
     lambda c: ["compare", c.study(joint={"training": ["joint"]}, data={
         "data_dir": c.data, "max_length": 32, "source": "machine", "translations_dir": str(c.tmp / "translations")})]),
    ("joint-held-out-not-a-language", "compare", r"joint.held_out: sun is not one of the study's languages",
     lambda c: ["compare", c.study(joint={"held_out": ["sun"]})]),
    # report
    ("report-malformed-jsonl", "report", r"results.jsonl: line 2 is not valid JSON",
     lambda c: _report(c, RECORD + '{"run_id": "nusax/fl')),
    ("report-against-unknown-label", "report", r"report: no runs labelled 'LoRA'; labels: FLARE",
     lambda c: _report(c, RECORD, "--against", '["LoRA"]', "--out_dir", str(c.out))),
    ("report-utf16", "report", r"is UTF-16 text", lambda c: _report(c, RECORD.encode("utf-16"))),
    ("report-missing-field", "report", r"results.jsonl:1: record lacks score",
     lambda c: _report(c, RECORD.replace(', "score": 50.0', ""))),
    ("report-out-dir-under-a-file", "report", r"report: cannot write to .*afile/x",
     lambda c: _report(c, RECORD, "--out_dir", str(c.file("afile", "x") / "x"))),
    # Python entry points
    ("get_task-unknown", "python", r"unknown task 'sentiment'", lambda c: _python(get_task, "sentiment")),
    ("task-yaml-latin1", "python", r"task.yaml: line 1 is not UTF-8",
     lambda c: _task(str(c.file("task.yaml", "name: caf\xe9\n".encode("latin-1"))), "load", "test", "de")),
    ("csv-utf16", "python", r"de/test.csv: is UTF-16 text",
     lambda c: _task(c.task(DE.encode("utf-16")), "load", "test", "de")),
    ("csv-latin1", "python", r"de/test.csv: line 3 is not UTF-8",
     lambda c: _task(c.task(DE.replace("Service", "caf\xe9").encode("latin-1")), "load", "test", "de")),
    ("tsv-short-row", "python", r"de/test.tsv: row 2 has 2 fields but the header names 3",
     lambda c: _task(
         c.task(DE.replace(",", "\t").replace("\tnegative", ""), en=EN.replace(",", "\t"), suffix="tsv"),
         "load", "test", "de",
     )),
    ("squad-json-truncated", "python", r"de/test.json: not SQuAD-format JSON",
     lambda c: _task(
         c.task('{"data": [{"paragraphs": [{"context": "Ber', en="{}", suffix="json"), "load", "test", "de"
     )),
    ("csv-missing-column", "python", r"missing column\(s\) label",
     lambda c: _task(c.task("id,text\n1,gut\n"), "load", "test", "de")),
    ("csv-extra-field", "python", r"de/test.csv: row 3 has 4 fields but the header names 3",
     lambda c: _task(c.task(DE + "3,ok,positive,extra\n"), "load", "test", "de")),
    ("csv-unknown-label", "python", r"row 2: unknown label 'great'",
     lambda c: _task(c.task(DE.replace("negative", "great")), "load", "test", "de")),
    ("csv-whitespace-text", "python", r"row 1: field 'text' is empty",
     lambda c: _task(c.task(DE.replace("gutes Essen", "   ")), "load", "test", "de")),
    ("jsonl-malformed", "python", r"line 2 is not valid JSON",
     lambda c: _task(
         c.task('{"id": 1, "text": "gut", "label": "positive"}\n{"id": 2,', suffix="jsonl"), "load", "test", "de"
     )),
    ("parallel-lengths", "python", r"1 rows but the English file .* has 2",
     lambda c: _task(c.task(DE.rsplit("2,", 1)[0]), "load_pairs", "test", "de")),
    ("parallel-ids", "python", r"row 2 has id '7' that is not in",
     lambda c: _task(c.task(DE.replace("2,s", "7,s")), "load_pairs", "test", "de")),
    ("pairs-unknown-language", "python", r"task toy has no language 'fr'",
     lambda c: _task(c.task(), "load_pairs", "test", "fr")),
    ("get_flare_model-no-query-value", "python", r"cannot tell which modules of GPT2LMHeadModel",
     lambda c: _flare_model("gpt2", c)),
    ("load_flare_model-shape-mismatch", "python", r"cannot load the adapter in .*size mismatch",
     lambda c: _flare_model("mismatch", c)),
    ("load_flare_model-missing", "python", r"is not a FLARE adapter directory", lambda c: _flare_model("missing", c)),
    ("translate_dataset-unknown-code", "python", r"unknown language code 'xx'",
     lambda c: _translate_rows(c, [{"id": "1", "text": "apik"}], tgt="xx")),
    ("translate_dataset-empty-text", "python", r"row '2': field 'text' is empty",
     lambda c: _translate_rows(c, [{"id": "1", "text": "apik"}, {"id": "2", "text": " "}])),
    ("load_study-python-tag", "python", r"line 1 is not valid YAML \(could not determine a constructor",
     lambda c: _python(load_study, c.file("s.yaml", f"model: {PAYLOAD.format(c.tmp)}\n"))),
    ("report-python-missing", "python", r"results file .*missing.jsonl does not exist",
     lambda c: _python(report, c.tmp / "missing.jsonl")),
    *HOSTILE_CASES,
]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _one_line(stderr: str, match: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and not PROGRESS.search(line)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("flare: error: ") and re.search(match, lines[0]), lines[0]


def test_the_corpus_covers_every_command():
    assert len(CASES) >= 25 and len({case_id for case_id, *_ in CASES}) == len(CASES)
    assert {entry for _, entry, _, _ in CASES} == {
        "compare", "train", "evaluate", "translate", "predict", "report", "python",
    }


@pytest.mark.parametrize("entry,match,build", [pytest.param(*rest, id=case_id) for case_id, *rest in CASES])
def test_bad_input(entry, match, build, shared, tmp_path, capsys):
    case = Case(tmp_path, shared)
    call = build(case)
    before = _snapshot(tmp_path)
    if entry != "python":
        assert call[0] == entry
        assert main(call) == 2
        _one_line(capsys.readouterr().err, match)
    else:
        with pytest.raises(FlareError, match=match) as error:
            call()
        assert "\n" not in str(error.value)
    assert _snapshot(tmp_path) == before, "the failed call left output behind"


SUBPROCESS = ["yaml-python-tag", "translate-unknown-language-code", "predict-planted-pickle"]


def test_bad_inputs_through_the_installed_command(shared, tmp_path):
    """The same cases through `python -m flare.cli` (all at once), and FLARE_DEBUG=1 showing the traceback."""
    table = {case_id: (match, build) for case_id, _, match, build in CASES}
    jobs = []
    for case_id in [*SUBPROCESS, "report-malformed-jsonl"]:
        case = Case(tmp_path / case_id, shared)
        case.tmp.mkdir()
        env = {**os.environ, "FLARE_DEBUG": "1" if case_id == "report-malformed-jsonl" else "0"}
        process = subprocess.Popen([sys.executable, "-m", "flare.cli", *table[case_id][1](case)], cwd=case.tmp, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        jobs.append((case_id, case, _snapshot(case.tmp), process))
    for case_id, case, before, process in jobs:
        _, stderr = process.communicate(timeout=300)
        if case_id == "report-malformed-jsonl":
            assert process.returncode != 0 and "Traceback" in stderr and "FlareError" in stderr
            continue
        assert process.returncode == 2, stderr
        _one_line(stderr, table[case_id][0])
        assert _snapshot(case.tmp) == before
