"""The second adversarial round (issue 17), as rows of tests/cli/test_bad_inputs.py's CASES: settings
that broke only after stage 1 or never, hostile YAML, names that would become paths outside their
folder, files that crashed with a traceback. Each row: id, the CLI command or "python", what the one
line must say, set-up (a `Case` in, CLI arguments or a callable out)."""

from __future__ import annotations

import json
import shutil

import torch
import yaml

from flare.data.tasks import get_task
from flare.study.settings import StageSettings, Study, load_study

# 324 bytes that expand to 9**9 (387 million) strings
ALIAS_BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
TASK = {"name": "toy", "type": "classification", "languages": ["en", "de"], "labels": ["negative", "positive"],
        "id_column": "id", "files": "{language}/{split}.csv", "splits": ["test"], "parallel": True}


def _call(function, *args):
    """The call of a Python case; its arguments (files) are made when the case is set up."""
    return lambda: function(*args)


def _settings(**overrides):
    """A study YAML with one setting group overridden (e.g. stage1={"gradient_accumulation": 0})."""
    return lambda c: ["compare", c.study(**overrides)]


def _custom_task(c, **overrides) -> str:
    c.file("en/test.csv", "id,text,label\n1,good,positive\n")
    c.file("de/test.csv", "id,text,label\n1,gut,positive\n")
    return str(c.file("task.yaml", yaml.safe_dump({**TASK, **overrides})))


def _model(c, how: str) -> str:
    """A copy of the tiny encoder with its weights truncated, or kept only as a pickle that
    torch's weights-only loader refuses (it holds a Python object besides tensors)."""
    folder = c.tmp / "model"
    shutil.copytree(c.shared["encoder"], folder)
    weights = folder / "model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        from safetensors.torch import load_file

        state = load_file(weights)
        weights.unlink()
        torch.save({**state, "extra": _Unpicklable()}, folder / "pytorch_model.bin")
    return c.study(model=str(folder))


class _Unpicklable:
    """Any class torch.load(weights_only=True) has not been told to trust."""


def _translations(c, content: bytes) -> str:
    """A study whose translate-test reads a translation file with the given bytes."""
    c.file("tr/nusax/test/jav-eng.jsonl", content)
    return c.study(methods=["translate-test"], data={"data_dir": c.data, "source": "machine", "max_length": 32,
                                                   "translations_dir": str(c.tmp / "tr"), "max_test": 4})


class _EmptyTranslator:
    """Translates every other sentence to nothing, as a broken MT model does."""

    fingerprint = "empty-every-other"

    def __init__(self):
        from flare.mt.translate import DecodingSettings

        self.settings = DecodingSettings()

    def translate_batch(self, texts, src, tgt):
        return ["" if i % 2 else f"en {t}" for i, t in enumerate(texts)]


def _translate_empty(c):
    """The cache keeps what was translated (a rerun with allow_empty costs nothing): it lives outside
    the case's folder here, so the check that nothing else was written still holds."""
    from flare.mt.translate import translate_dataset

    rows = [{"id": str(i), "text": f"kalimat {i}"} for i in range(6)]
    cache = c.tmp.parent / f"{c.tmp.name}-cache.sqlite"
    return lambda: translate_dataset(rows, model="fake", src_lang="jav", tgt_lang="eng", task="nusax", split="test",
                                     translations_dir=c.out, translator=_EmptyTranslator(), show_progress=False,
                                     cache_path=cache)


def _trained_then(c, *overrides: str) -> list[str]:
    """`flare train` into a folder where an earlier `flare train` recorded its settings (study.yaml)."""
    from flare.cli import main

    config = c.trained()
    (c.tmp / "study" / "study.yaml").unlink(missing_ok=True)
    assert main(["train", config, "--method", "zero-shot", "--language", "jav"]) == 0
    assert (c.tmp / "study" / "study.yaml").is_file()
    return ["train", config, "--method", "zero-shot", "--language", "jav", *overrides]


def _adapter_config(c) -> list[str]:
    args = c.predict("--text", "apik", "--english", "good")
    path = c.adapter() / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "target_modules": 5}))
    return args


HOSTILE_CASES = [
    # every setting checked before any work, the constraint declared with its type
    ("gradient-accumulation-zero", "compare", r"stage1.gradient_accumulation: 0 is out of range \(must be >= 1\)",
     _settings(stage1={"gradient_accumulation": 0})),
    ("eval-batch-size-zero", "compare", r"stage2.eval_batch_size: 0 is out of range",
     _settings(stage2={"eval_batch_size": 0})),
    ("max-length-zero", "compare", r"data.max_length: 0 is out of range",
     lambda c: ["compare", c.study(data={"data_dir": c.data, "max_length": 0})]),
    ("learning-rate-nan", "compare", r"stage1.learning_rate: nan is not a finite number",
     _settings(stage1={"learning_rate": float("nan")})),
    ("weight-decay-negative", "compare", r"stage2.weight_decay: -5.0 is out of range \(must be >= 0\)",
     _settings(stage2={"weight_decay": -5})),
    ("seed-beyond-every-rng", "compare", r"seeds\[0\]: 1180591620717411303424 is out of range",
     _settings(seeds=[2**70])),
    ("adapter-rank-huge", "compare", r"adapter.r: 1099511627776 is out of range \(must be >= 1 and <= 4096\)",
     _settings(adapter={"r": 2**40})),
    ("heads-not-dividing-rank", "compare", r"adapter.cross_attention_heads: 3 does not divide adapter.r 8",
     _settings(fusions=["cross_attention"], adapter={"r": 8, "cross_attention_heads": 3})),
    ("methods-empty", "compare", r"methods: the list is empty", _settings(methods=[])),
    ("fusions-empty-with-flare", "compare", r"fusions: the list is empty; give at least one \(the flare methods",
     _settings(fusions=[])),
    ("seeds-duplicate", "compare", r"seeds: 1 is listed twice", _settings(seeds=[1, 1])),
    ("max-test-negative", "compare", r"data.max_test: -1 is out of range",
     lambda c: ["compare", c.study(data={"data_dir": c.data, "max_test": -1})]),
    ("mixed-precision-bare-no", "compare", r"stage1.mixed_precision: False is not one of no, bf16, fp16 \(quote",
     lambda c: ["compare", str(c.file("s.yaml", "task: nusax\nstage1: {mixed_precision: no}\n"))]),
    ("override-out-of-range", "compare", r"stage2.learning_rate: -1.0 is out of range \(must be > 0",
     lambda c: ["compare", c.study(), "--stage2.learning_rate=-1"]),
    ("override-duplicate-seeds", "train", r"seeds: 3 is listed twice",
     lambda c: ["train", c.study(), "--seeds", "[3, 3]", "--method", "flare", "--language", "jav"]),
    ("config-equals-form", "compare", r"methods\[0\]: 'flarex' is not one of",
     lambda c: ["compare", f"--config={c.study(methods=['flarex'])}"]),
    ("train-into-a-folder-of-other-settings", "train", r"holds runs made with other settings: adapter.lora_alpha",
     lambda c: _trained_then(c, "--adapter.lora_alpha", "4")),
    ("compare-into-a-folder-train-recorded", "compare", r"holds runs made with other settings: stage1.learning_rate",
     lambda c: ["compare", *_trained_then(c)[1:2], "--stage1.learning_rate", "0.1"]),
    ("api-validate-gradient-accumulation", "python", r"stage1.gradient_accumulation: 0 is out of range",
     lambda c: Study(stage1=StageSettings(gradient_accumulation=0)).validate),
    # hostile YAML: refused while parsing, in the CLI and the API alike
    ("yaml-duplicate-key", "compare", r"s.yaml: line 3 is not valid YAML \(duplicate key 'languages'\)",
     lambda c: ["compare", str(c.file("s.yaml", "task: nusax\nlanguages: [jav]\nlanguages: [sun]\n"))]),
    ("yaml-alias-bomb", "compare", r"s.yaml: its aliases expand to more than 100000 values",
     lambda c: ["compare", str(c.file("s.yaml", ALIAS_BOMB))]),
    ("load_study-alias-bomb", "python", r"s.yaml: its aliases expand to more than 100000 values",
     lambda c: _call(load_study, c.file("s.yaml", ALIAS_BOMB))),
    ("load_study-duplicate-key", "python", r"line 2 is not valid YAML \(duplicate key 'task'\)",
     lambda c: _call(load_study, c.file("s.yaml", "task: nusax\ntask: xnli\n"))),
    ("task-yaml-alias-bomb", "python", r"task.yaml: its aliases expand",
     lambda c: _call(get_task, str(c.file("task.yaml", ALIAS_BOMB)))),
    ("override-alias-bomb", "compare", r"expand to more than 100000 values",
     lambda c: ["compare", c.study(), "--languages", ALIAS_BOMB.replace("\n", ", ").join("{}")]),
    # names that become paths
    ("task-name-escapes", "python", r"task name '../../escaped' cannot name a folder",
     lambda c: _call(get_task, _custom_task(c, name="../../escaped"))),
    ("language-code-escapes", "python", r"language code '../../x' cannot name a folder",
     lambda c: _call(get_task, _custom_task(c, languages=["en", "../../x"]))),
    ("translate-task-name-escapes", "translate", r"task name '../../escaped' cannot name a folder",
     lambda c: c.translate("--task", _custom_task(c, name="../../escaped"), "--src_lang", "de",
                           "--tgt_lang", "en")),
    # files that crashed with a traceback
    ("model-weights-truncated", "compare", r"model.safetensors: not a readable safetensors file",
     lambda c: ["compare", _model(c, "truncated")]),
    ("model-pickle-refused", "compare", r"pytorch_model.bin: torch refuses to read it as plain weights",
     lambda c: ["compare", _model(c, "pickle")]),
    ("translation-latin1", "compare", r"jav-eng.jsonl: line 2 is not UTF-8 text",
     lambda c: ["compare", _translations(c, b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "caf\xe9"}\n')]),
    ("adapter-config-target-modules-number", "predict", r"adapter_config.json", _adapter_config),
    ("csv-duplicate-column", "python", r"de/test.csv: the header names column 'text' twice",
     lambda c: _call(get_task(c.task("id,text,text,label\n1,a,gut,positive\n")).load, "test", "de")),
    ("translate-batch-size-zero", "translate", r"batch_size: 0 must be at least 1",
     lambda c: c.translate("--batch_size", "0")),
    ("translate-empty-outputs", "python", r"translated 3 of 6 rows to empty text \(first: row '1'\); nothing written",
     _translate_empty),
    ("predict-missing-text-file", "predict", r"inputs.txt: file not found",
     lambda c: c.predict("--text", "inputs.txt", "--english", "good")),
    ("predict-zero-width-input", "predict", r"input 0: field 'text' is empty",
     lambda c: c.predict("--text", "\u200b\u200c\ufeff", "--english", "good")),
]
