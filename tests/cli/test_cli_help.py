"""The command line as a reader meets it: help text, flags that apply, plain-string options, and no
torch import for `--help` or `flare report`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flare.cli import main

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "nusax-fusions" / "results.jsonl"


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:  # argparse leaves a subcommand's help by exiting
        main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_shows_one_sentence_per_command_and_parsed_arguments(capsys):
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "with a saved adapter of a trained method (e.g. a Javanese FLARE adapter on Sundanese)" in " ".join(
        top.split()
    )
    text = _help("report", capsys)
    description = text.split("options:")[0]
    assert "Args:" not in text and "out_dir:" not in description  # the Args: section is per argument
    assert "--out_dir OUT_DIR" in text and "where to write" in text


def test_single_run_commands_hide_the_study_lists_and_show_choices(capsys):
    train = _help("train", capsys)
    assert "--languages" not in train and "--seeds" not in train and "--language LANGUAGE" in train
    assert "--data.train_english" not in train and "--train_english TRAIN_ENGLISH" in train
    assert "the target language of the run" in train
    compare = _help("compare", capsys)
    assert "--languages" in compare and "{gold,machine,auto}" in compare and "Range: >= 1" in compare


def test_report_against_takes_a_plain_label(tmp_path, capsys):
    assert main(["report", str(RESULTS), "--out_dir", str(tmp_path), "--against", "FLARE (add)"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert "Paired difference vs FLARE (add)" in Path(paths["markdown"]).read_text()
    two = '["FLARE (add)", "FLARE (mul)"]'
    assert main(["report", str(RESULTS), "--out_dir", str(tmp_path), "--against", two]) == 0
    assert "Paired difference vs FLARE (mul)" in (tmp_path / "results.md").read_text()


def test_help_and_report_do_not_import_torch(tmp_path):
    check = "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]"
    start = "import sys\nfrom flare.cli import main\n"
    report = start + f"main(['report', {str(RESULTS)!r}, '--out_dir', {str(tmp_path)!r}])\n"
    helps = start + "try:\n    main(['compare', '--help'])\nexcept SystemExit:\n    pass\n"
    for code in (report, helps):
        subprocess.run([sys.executable, "-c", code + check], check=True, capture_output=True)
