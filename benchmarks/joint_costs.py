"""What one adapter per language costs against one joint adapter (issue 38): per trained method and
kind of adapter (per-language, joint, leave-one-out), how many adapters a study folder holds, their
bytes on disk, and their training wall time in total (the sum of the epochs' seconds in each run's
train_log.csv: training plus each epoch's validation, not the test scoring).

    .venv/bin/python benchmarks/joint_costs.py benchmarks/results/nusax-joint
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def kind(group: str) -> str:
    """The adapter's kind from its folder level (runs/<method>/<group>/seed<k>)."""
    if group == "joint":
        return "joint"
    return "leave-one-out" if group.startswith("joint-without-") else "per-language"


def costs(study_dir: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(method folder, kind) -> adapters, bytes, training seconds."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    for adapter in sorted((study_dir / "runs").glob("*/*/seed*/adapter")):
        run = adapter.parent
        row = table.setdefault((run.parent.parent.name, kind(run.parent.name)),
                               {"adapters": 0, "bytes": 0, "seconds": 0.0})
        row["adapters"] += 1
        row["bytes"] += sum(f.stat().st_size for f in adapter.rglob("*") if f.is_file())
        log = run / "train_log.csv"
        if log.is_file():
            with open(log, encoding="utf-8", newline="") as handle:
                row["seconds"] += sum(float(r["seconds"]) for r in csv.DictReader(handle))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    args = parser.parse_args()
    print("| method | adapters | kind | bytes on disk | training wall time (s) |")
    print("|---|---:|---|---:|---:|")
    for (method, name), row in costs(args.study_dir).items():
        print(f"| {method} | {row['adapters']:.0f} | {name} | {row['bytes']:,.0f} | {row['seconds']:,.0f} |")


if __name__ == "__main__":
    main()
