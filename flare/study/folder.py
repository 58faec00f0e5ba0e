"""A study's output folder as a record of its settings: the study.yaml its runs were made with,
whether a command may continue the folder (same settings, or a stage-2 sweep point of them), and
results.jsonl, which only ever grows by whole records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from flare.errors import FlareError
from flare.files import append_line, write_atomically
from flare.study.settings import (
    JOINT_LISTS,
    RUN_LISTS,
    Study,
    changed_settings,
    from_dict,
    read_study_yaml,
    setting_value,
    stage2_variant,
    study_to_dict,
)


def holds_runs(output_dir: str | Path) -> bool:
    """Whether the folder's study.yaml speaks for work already done (results or a stage-1 model)."""
    out = Path(output_dir)
    return (out / "study.yaml").is_file() and ((out / "results.jsonl").is_file() or (out / "stage1").is_dir())


def recorded_study(output_dir: str | Path) -> dict[str, Any] | None:
    """The study.yaml settings of a folder that holds runs or a stage-1 model (None: a new folder)."""
    return read_study_yaml(Path(output_dir) / "study.yaml") if holds_runs(output_dir) else None


def _recorded_as_study(output_dir: str | Path) -> Study | None:
    recorded = recorded_study(output_dir)
    if recorded is None:
        return None
    try:
        return from_dict(Study, recorded)
    except FlareError as error:
        raise FlareError(f"{Path(output_dir) / 'study.yaml'}: {error}") from None


def stage1_dir(output_dir: str | Path) -> Path:
    """Where a study folder keeps its merged stage-1 model."""
    return Path(output_dir) / "stage1" / "model"


def stage1_done(study: Study) -> bool:
    """Whether stage 2 can start: `stage1_model` is given, or the folder holds its own."""
    return bool(study.stage1_model) or (stage1_dir(study.output_dir) / "config.json").is_file()


def stage1_source(study: Study) -> str:
    """The English task model stage 2 starts from: `stage1_model`, else the folder's own."""
    return study.stage1_model or str(stage1_dir(study.output_dir))


def folder_variant(study: Study) -> str | None:
    """The stage-2 sweep point that `study`'s runs belong to in its output folder: the stage-2
    settings that differ from the folder's study.yaml (None: the folder's own settings)."""
    recorded = _recorded_as_study(study.output_dir)
    return None if recorded is None else stage2_variant(recorded, study)


def check_same_settings(study: Study) -> None:
    """A study folder that holds results or a stage-1 model holds them for its study.yaml's
    settings: continuing it with other ones would mix runs of two studies in one table."""
    recorded = _recorded_as_study(study.output_dir)
    changes = [] if recorded is None else changed_settings(recorded, study)
    if changes:
        more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
        raise FlareError(
            f"output_dir {Path(study.output_dir)} holds runs made with other settings: {changes[0]}{more}; "
            "use a new output_dir, or delete that folder to start over"
        )


def check_writable(output_dir: Path) -> None:
    """The folder exists and is writable, or can be created under its nearest existing parent."""
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise FlareError(f"output_dir: cannot create {output_dir} ({existing} is not a writable folder)")


def create_output_dir(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FlareError(f"output_dir: cannot create {output_dir} ({error.strerror or error})") from None


def record_settings(study: Study, where: str) -> None:
    """Write study.yaml, the settings the folder's runs are made with (under the folder lock), with
    a comment saying where the last command ran. A folder that holds runs keeps the lists of runs
    (languages, methods...) it already has, and its own stage-2 settings (a sweep point's are in
    its records)."""
    out = Path(study.output_dir)
    settings = study_to_dict(study)
    before = recorded_study(out)
    if before is not None:
        settings["stage2"] = before.get("stage2", settings["stage2"])
        for name in (*RUN_LISTS, *JOINT_LISTS):
            section, _, key = name.rpartition(".")
            recorded = setting_value(before, name)
            if isinstance(recorded, list):
                merged = list(dict.fromkeys([*recorded, *setting_value(settings, name)]))
                (settings[section] if section else settings)[key] = merged
    write_atomically(out / "study.yaml", f"# {where}\n" + yaml.safe_dump(settings, sort_keys=False))


def append_record(results_path: Path, record: dict[str, Any]) -> None:
    """Add a record: one locked append, so no concurrent writer loses one (never a half-written line)."""
    append_line(results_path, json.dumps(record, ensure_ascii=False))
