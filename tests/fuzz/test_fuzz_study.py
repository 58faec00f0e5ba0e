"""Fuzzing study YAMLs and CLI flag values (fuzz_support.py states the rule each case is held to).

A case starts from a valid study and mutates it: one setting replaced by a hostile value (a wrong
type, a non-finite or out-of-range number, text with control characters or NUL, a path that
climbs out of its folder) or removed, an unknown or duplicate key added, and the file's bytes
spoiled (cut short, re-encoded as UTF-16 or Latin-1, a byte inserted). The CLI runs in this
process (`flare.cli.main`) with the study's work replaced by a stub that records the validated
study: what is fuzzed is everything between what a user types and the first piece of work."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml
from fuzz_support import check_api, check_cli, fuzz, half_written, numbers, run_cli, snapshot, tally, texts, values
from hypothesis import given
from hypothesis import strategies as st

import flare.cli as cli
from flare.study.settings import Study, load_study

SANDBOX_NAME = "sandbox"


def _base(out: str) -> dict:
    study = dataclasses.asdict(Study())
    study.update(methods=["zero-shot", "flare"], output_dir=out)
    return study


def _paths(values: dict, prefix: tuple = ()) -> list[tuple]:
    found = []
    for key, value in values.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found += _paths(value, (*prefix, key))
    return found


PATHS = _paths(_base("out"))


@st.composite
def study_bytes(draw) -> bytes:
    study = _base("out")
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = study
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent.get(key), dict) else None
            if parent is None:
                break
        if parent is None:
            continue
        action = draw(st.sampled_from(["value", "value", "number", "list-item", "remove", "unknown"]))
        if action == "value":
            parent[path[-1]] = draw(values)
        elif action == "number":
            parent[path[-1]] = draw(numbers)
        elif action == "list-item":
            parent[path[-1]] = [draw(st.one_of(texts, numbers))]
        elif action == "remove":
            parent.pop(path[-1], None)
        else:
            parent[draw(texts)] = draw(values)
    try:
        text = yaml.safe_dump(study, allow_unicode=draw(st.booleans()), sort_keys=draw(st.booleans()))
    except yaml.YAMLError:  # a value PyYAML cannot write (e.g. a surrogate): write it by hand
        text = f"task: nusax\noutput_dir: out\nmodel: {draw(texts)!r}\n"
    spoil = draw(st.sampled_from(["none", "none", "none", "cut", "utf-16", "latin-1", "byte", "duplicate", "nul",
                                  "tab-indent", "bom"]))
    if spoil == "duplicate":
        text += f"{draw(st.sampled_from([p[0] for p in PATHS]))}: {draw(texts)!r}\n"
    elif spoil == "nul":
        position = draw(st.integers(0, len(text)))
        text = text[:position] + draw(st.sampled_from(["\x00", '"\\u0000"', "\x07", "\ud800", "\x1b[31m"])) + \
            text[position:]
    elif spoil == "tab-indent":
        text = text.replace("  ", "\t")
    data = text.encode("utf-8", "surrogatepass")
    if spoil == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif spoil == "utf-16":
        data = text.encode("utf-16", "surrogatepass")
    elif spoil == "latin-1":
        data = text.encode("latin-1", "replace") + b"# caf\xe9\n"
    elif spoil == "byte":
        position = draw(st.integers(0, len(data)))
        data = data[:position] + bytes([draw(st.integers(0, 255))]) + data[position:]
    elif spoil == "bom":
        data = b"\xef\xbb\xbf" + data
    return data


# every command's work replaced: the fuzz covers parsing and validation, never training
STUBS = {name: (lambda study=None, **kwargs: None) for name in cli.COMMANDS}
_PARSER = []


def _cached_parser():
    """The real parser (built from the real commands), built once: building it takes longer than a case."""
    if not _PARSER:
        _PARSER.append(cli._parser())
    return _PARSER[0]


def _run_stubbed(argv: list[str]) -> str:
    _cached_parser()
    with mock.patch.dict(cli.COMMANDS, STUBS), mock.patch.object(cli, "_parser", _cached_parser):
        status, _, stderr = run_cli(argv)
    return check_cli(status, stderr, argv)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / SANDBOX_NAME
    folder.mkdir()
    return folder


def _in_sandbox(sandbox: Path, run):
    """Run with the sandbox as working directory (relative output paths land there); check that
    nothing outside sandbox/out changed and nothing half-written is left."""
    out = sandbox / "out"
    before = snapshot(sandbox.parent, skip=out)
    cwd = os.getcwd()
    os.chdir(sandbox)
    try:
        outcome = run()
    finally:
        os.chdir(cwd)
    assert snapshot(sandbox.parent, skip=out) == before, "a case wrote outside its output folder"
    assert not half_written(out)
    return outcome


@fuzz("study_yaml_cli")
@given(data=study_bytes(), command=st.sampled_from(["compare", "compare", "train", "evaluate"]))
def test_study_yaml_through_the_cli(sandbox, data, command):
    path = sandbox / "study.yaml"
    path.write_bytes(data)
    argv = [command, "study.yaml"]
    if command == "train":
        argv += ["--method", "flare", "--language", "jav"]
    elif command == "evaluate":
        argv += ["--language", "jav"]

    tally("study_yaml_cli", _in_sandbox(sandbox, lambda: _run_stubbed(argv)))


@fuzz("study_yaml_api")
@given(data=study_bytes())
def test_study_yaml_through_the_api(sandbox, data):
    path = sandbox / "study.yaml"
    path.write_bytes(data)
    tally("study_yaml_api", _in_sandbox(sandbox, lambda: check_api(lambda: load_study(path).validate())))


# ----------------------------------------------------------------- CLI flag values

STUDY_FLAGS = sorted(
    [".".join(p) for p in PATHS if not isinstance(_base("out").get(p[0]), dict) or len(p) == 2]
)
COMMAND_FLAGS = {
    "compare": ["time_budget_minutes"],
    "train": ["method", "language", "seed", "fusion", "train_english", "test_english"],
    "evaluate": ["language", "method", "adapter_dir", "test"],
    "predict": ["language", "text", "english", "method", "fusion", "seed", "output"],
    "translate": ["task", "split", "src_lang", "tgt_lang", "batch_size", "num_beams", "max_input_length",
                  "language_map", "device", "dtype", "allow_empty"],
    "report": ["out_dir", "against"],
}
REQUIRED = {
    "train": ["--method", "flare", "--language", "jav"], "evaluate": ["--language", "jav"],
    "predict": ["--language", "jav", "--text", "apik"],
    "translate": ["--task", "nusax", "--split", "test", "--src_lang", "jav", "--tgt_lang", "eng", "--model", "m",
                  "--translations_dir", "out"],
}


@fuzz("cli_flags")
@given(
    command=st.sampled_from(sorted(COMMAND_FLAGS)), data=st.data(),
    value=st.one_of(texts, numbers.map(str), values.map(lambda v: yaml.safe_dump(v, default_flow_style=True)
                                                      .strip().removesuffix("...").strip())),
    form=st.sampled_from(["separate", "equals", "twice", "unknown-flag", "bare"]),
)
def test_cli_flag_values(sandbox, command, data, value, form):
    own = COMMAND_FLAGS[command]
    flags = own + (STUDY_FLAGS if command in cli.STUDY_COMMANDS else [])
    flag = "--" + (data.draw(st.sampled_from(flags)) if form != "unknown-flag" else data.draw(texts).lstrip("-"))
    if "\x00" in value or "\x00" in flag:  # a NUL cannot reach a real command line (execve refuses it)
        value, flag = value.replace("\x00", ""), flag.replace("\x00", "")
    study = sandbox / "flags.yaml"
    if not study.exists():
        study.write_text(yaml.safe_dump(_base("out")))
    if command == "report":
        results = sandbox / "results.jsonl"
        if not results.exists():
            results.write_text("")
        argv = ["report", "results.jsonl"]
    else:
        argv = [command, *(["flags.yaml"] if command in cli.STUDY_COMMANDS else []), *REQUIRED.get(command, [])]
    if form == "equals":
        argv.append(f"{flag}={value}")
    elif form == "bare":
        argv.append(flag)
    elif form == "twice":
        argv += [flag, value, flag, value]
    else:
        argv += [flag, value]

    tally("cli_flags", _in_sandbox(sandbox, lambda: _run_stubbed(argv)))


# ----------------------------------------------------------------- a few through a real process

SUBPROCESS_CASES = [
    b"task: nusax\nlanguages: [jav\n",
    b"task: nusax\nmodel: \"a\x00b\"\n",
    "task: nusax\nlanguages: [jav]\n".encode("utf-16"),
    b"task: nusax\nstage1: {learning_rate: .nan}\n",
    b"task: nusax\nseeds: [1]\nseeds: [2]\n",
    b"task: ../../escaped\n",
]


def test_a_few_study_yamls_through_the_installed_command(tmp_path):
    """The in-process cases stand for real runs: the same rule through `python -m flare.cli`."""
    jobs = []
    for index, data in enumerate(SUBPROCESS_CASES):
        folder = tmp_path / str(index)
        folder.mkdir()
        (folder / "study.yaml").write_bytes(data)
        before = snapshot(folder)
        process = subprocess.Popen([sys.executable, "-m", "flare.cli", "compare", "study.yaml"], cwd=folder,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "FLARE_DEBUG": "0"})
        jobs.append((data, folder, before, process))
    for data, folder, before, process in jobs:
        _, stderr = process.communicate(timeout=300)
        check_cli(process.returncode, stderr, [repr(data)])
        assert process.returncode == 2, (data, stderr)
        assert snapshot(folder) == before
        tally("subprocess", "refused")
