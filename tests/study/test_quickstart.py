"""`make quickstart` from a fresh clone and from an installed package: where its data comes from
(flare/data/locations.py, the one place the tests use too), and its entry point end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flare.data import locations
from flare.data.locations import BUNDLED_DATA_DIR, checkout_data_dir, checkout_root, default_data_dir
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.study import quickstart

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("FLARE_DATA_DIR", raising=False)


def _clone(tmp_path: Path, with_data: bool) -> Path:
    """A fresh-clone layout: <work>/flare-xlt/{pyproject.toml,flare/} and, if asked, <work>/shared/data."""
    package = tmp_path / "work" / "flare-xlt" / "flare"
    package.mkdir(parents=True)
    (package.parent / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    if with_data:
        for language in ("eng", "jav"):
            folder = tmp_path / "work" / "shared" / "data" / "nusax-senti" / language
            folder.mkdir(parents=True)
            (folder / "train.csv").write_text("id,text,label\n")
    return package


def test_the_checkout_layout_is_found_from_the_package_not_the_working_directory(no_env, tmp_path):
    package = _clone(tmp_path, with_data=True)
    assert checkout_root(package) == package.parent
    assert checkout_data_dir(package) == tmp_path / "work" / "shared" / "data"
    assert default_data_dir(package) == tmp_path / "work" / "shared" / "data"
    assert quickstart.quickstart_data_dir(package) == (tmp_path / "work" / "shared" / "data", None)
    assert checkout_data_dir() == ROOT.parent / "shared" / "data"  # this clone: ../shared/data beside it


def test_an_installed_package_or_a_clone_without_data_uses_the_bundled_slice_and_says_how_to_set_the_folder(
    no_env, tmp_path
):
    site_packages = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "flare"
    site_packages.mkdir(parents=True)
    for package in (site_packages, _clone(tmp_path, with_data=False)):
        assert default_data_dir(package) is None
        folder, note = quickstart.quickstart_data_dir(package)
        assert folder == BUNDLED_DATA_DIR and "set FLARE_DATA_DIR" in note and "flare download" in note
    assert checkout_root(site_packages) is None


def test_flare_data_dir_wins_and_a_folder_without_nusax_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FLARE_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    with pytest.raises(FlareError, match=rf"FLARE_DATA_DIR={tmp_path}: no NusaX .* set FLARE_DATA_DIR"):
        quickstart.quickstart_data_dir()


def test_the_bundled_slice_is_parallel_nusax_with_its_licence():
    task = get_task("nusax")
    for split, rows in (("train", 500), ("valid", 100), ("test", 400)):
        pairs = task.load_pairs(split, "jav", BUNDLED_DATA_DIR, source="gold")
        assert len(pairs) == rows and all(p.kind == "gold" for p in pairs)
    licence = (BUNDLED_DATA_DIR / "nusax-senti" / "LICENSE").read_text()
    assert "Attribution-ShareAlike 4.0" in licence
    assert "Winata et al." in (BUNDLED_DATA_DIR / "nusax-senti" / "README.md").read_text()


def test_make_quickstart_runs_this_entry_point():
    recipe = re.search(r"^quickstart:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "-m flare.study.quickstart" in recipe


@pytest.mark.slow
def test_the_quickstart_runs_where_no_datasets_folder_exists(no_env, monkeypatch, tmp_path, capsys):
    """The entry point `make quickstart` runs, on a machine without ../shared/data (shortened:
    48 training rows, one epoch per stage): real e5-small weights, the bundled data, three rows."""
    monkeypatch.setattr(locations, "checkout_data_dir", lambda *_: None)
    monkeypatch.chdir(tmp_path)
    assert quickstart.main(["--max_train", "48", "--stage1_epochs", "1", "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "NusaX Javanese/English slice bundled with flare-xlt" in printed
    for row in ("zero-shot", "translate-train (LoRA)", "FLARE (add_relu)"):
        assert re.search(rf"\| {re.escape(row)} \| (\*\*)?\d+\.\d(\*\*)? \|", printed), printed
    assert (tmp_path / "runs" / "quickstart" / "results.md").is_file()
