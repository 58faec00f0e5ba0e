"""Concurrent commands on one output folder: results appends never lose a record, and the folder
lock refuses a second writer (naming the first) or takes over the lock of a dead one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from flare.cli import main
from flare.errors import FlareError
from flare.files import LOCK_NAME, append_line, folder_lock
from flare.study.report import load_results

REPO = Path(__file__).resolve().parents[2]

APPENDER = textwrap.dedent("""
    import json, sys
    from flare.files import append_line
    path, writer, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for number in range(count):
        record = {"run_id": f"w{writer}/r{number}", "task": "t", "method": "m", "label": "M", "language": "de",
                  "seed": number, "metric": "accuracy", "score": float(number), "padding": "x" * (number % 700)}
        append_line(path, json.dumps(record))
""")

HOLDER = textwrap.dedent("""
    import sys, time
    from flare.files import folder_lock
    with folder_lock(sys.argv[1], "flare compare"):
        print("locked", flush=True)
        time.sleep(600)
""")


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE, text=True)


def test_processes_appending_to_one_results_file_keep_every_record(tmp_path):
    path, writers, count = tmp_path / "results.jsonl", 6, 150
    processes = [_python(APPENDER, str(path), str(w), str(count)) for w in range(writers)]
    assert all(p.wait(timeout=120) == 0 for p in processes)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == writers * count
    records = [json.loads(line) for line in lines]  # no line torn or interleaved
    assert {r["run_id"] for r in records} == {f"w{w}/r{n}" for w in range(writers) for n in range(count)}
    assert len(load_results(path)) == writers * count


def test_an_append_cuts_back_the_torn_line_a_killed_writer_left(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"run_id": "a"}\n{"run_id": "b", "sco')
    append_line(path, '{"run_id": "c"}')
    assert path.read_text() == '{"run_id": "a"}\n{"run_id": "c"}\n'
    with pytest.raises(ValueError):
        append_line(path, "two\nlines")


def test_a_live_lock_is_refused_naming_its_holder(tmp_path):
    holder = _python(HOLDER, str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "locked"
        expected = rf"is in use by process {holder.pid} on {socket.gethostname()} \(flare compare\) \(lock file .*"
        with pytest.raises(FlareError, match=expected + LOCK_NAME) as error, folder_lock(tmp_path):
            pass
        assert "\n" not in str(error.value)
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_holder_is_taken_over_with_a_note(tmp_path, capsys):
    holder = _python(HOLDER, str(tmp_path))
    assert holder.stdout.readline().strip() == "locked"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert str(holder.pid) in (tmp_path / LOCK_NAME).read_text()  # left behind, as after a crash
    with folder_lock(tmp_path, "flare train"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"taking over the lock of process {holder.pid}" in err and "no longer running" in err
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, data_dir):
    from flare.data.tasks import get_task
    from tiny_models import save_encoder

    texts = ["Sentiment", ":"] + [e.fields["text"] for e in get_task("nusax").load("test", "jav", data_dir)[:20]]
    return save_encoder(tmp_path_factory.mktemp("encoder"), texts, num_hidden_layers=1)


def test_a_second_command_on_a_busy_folder_stops_before_any_work(encoder, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "task": "nusax", "model": str(encoder), "languages": ["jav"], "methods": ["zero-shot"], "output_dir": str(out),
        "data": {"data_dir": str(data_dir), "max_train": 8, "max_valid": 4, "max_test": 4, "max_length": 32},
        "stage1": {"epochs": 1, "batch_size": 4},
    }))
    holder = _python(HOLDER, str(out))
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = sorted(p.name for p in out.iterdir())
        for command in (["compare", str(config)], ["train", str(config), "--method", "zero-shot", "--language", "jav"]):
            assert main(command) == 2
            err = capsys.readouterr().err.strip()
            assert err.startswith("flare: error: output_dir") and f"in use by process {holder.pid}" in err, err
            assert len(err.splitlines()) == 1
        assert sorted(p.name for p in out.iterdir()) == before  # no study.yaml, no stage 1, no results
    finally:
        holder.kill()
        holder.wait()
    assert main(["compare", str(config)]) == 0  # the holder is gone: its stale lock is taken over
    assert len(load_results(out / "results.jsonl")) == 1 and not (out / LOCK_NAME).exists()
