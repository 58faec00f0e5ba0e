"""What every fuzz target shares: how many cases it runs, the fixed seed, hostile values, and the rule
each case is held to.

The rule: a CLI call exits 0 (the input was valid) or 2 with exactly one line on stderr, an API call
returns or raises FlareError with a one-line message; never a traceback or another exception; no
file appears, changes or disappears outside the output folder the case names, and no half-written
file is left inside it.

Case counts: FLARE_FUZZ_EXAMPLES (default 200, a quick standing check inside the test suite) is
shared among the targets by their weights; `make fuzz` runs 10,000. FLARE_FUZZ_SEED (default 40)
fixes hypothesis' seed, so a run is repeatable. FLARE_FUZZ_REPORT names a JSON file that gets each
target's counts of accepted and refused cases (docs/reliability.md records them)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import string
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st

TOTAL = int(os.environ.get("FLARE_FUZZ_EXAMPLES", "200"))
SEED = int(os.environ.get("FLARE_FUZZ_SEED", "40"))
REPORT = os.environ.get("FLARE_FUZZ_REPORT")
WEIGHTS = {  # share of the cases per target
    "study_yaml_cli": 0.22, "study_yaml_api": 0.08, "cli_flags": 0.20, "task_files": 0.14, "translation_jsonl": 0.06,
    "results_jsonl": 0.04, "flare_config": 0.10, "forward_arguments": 0.16, "subprocess": 0.0,
}
# FLARE_FUZZ_SHRINK=0: report a failing case as found, without minimising it (faster when hunting)
PHASES = [p for p in Phase if p != Phase.shrink or os.environ.get("FLARE_FUZZ_SHRINK", "1") != "0"]
PROGRESS = re.compile(r"\d+%\|")  # tqdm bars are not messages


def fuzz(target: str):
    """The hypothesis settings of one target: its share of the cases, the fixed seed, no example
    database (a run depends on the seed alone), no deadline (the CPU is shared)."""
    examples = max(5, round(TOTAL * WEIGHTS[target]))

    def decorate(test):
        test = settings(
            max_examples=examples, deadline=None, database=None, derandomize=False, print_blob=True,
            suppress_health_check=list(HealthCheck), phases=PHASES,
        )(test)
        return seed(SEED)(test)

    return decorate


TALLIES: dict[str, Counter[str]] = {}


def tally(target: str, outcome: str) -> None:
    """Count one case's outcome; tests/fuzz/conftest.py writes the counts to FLARE_FUZZ_REPORT."""
    TALLIES.setdefault(target, Counter())[outcome] += 1


def save_tallies() -> None:
    if not REPORT or not TALLIES:
        return
    path = Path(REPORT)
    data = json.loads(path.read_text()) if path.is_file() else {}
    for target, counts in TALLIES.items():
        data[target] = {**dict(counts), "total": sum(counts.values())}
    data["_settings"] = {"FLARE_FUZZ_EXAMPLES": TOTAL, "FLARE_FUZZ_SEED": SEED}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------- hostile values

CONTROL = "".join(chr(c) for c in [*range(0, 32), 127, 0x85, 0x2028, 0x2029, 0xFEFF, 0x200B, 0xD7FF])
TRAVERSAL = ["..", "../..", "../../escaped", "/etc/passwd", "~/x", "a/../../b", "./x", "x\\..\\y", "C:\\x", "nul", ""]
NUMBERS_AS_TEXT = ["nan", "NaN", ".nan", "inf", "-inf", ".inf", "1e400", "-1e400", "1e-400", "0", "-0", "-1", "2**70",
                   "1180591620717411303424", "0x10", "1_000", "1.5", "True", "null", "~", "yes", "no", "[]", "{}"]

texts = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from(CONTROL + "ab:-[]{}#&*!|>'\"%@`,\\ "), max_size=20),
    st.sampled_from(TRAVERSAL + NUMBERS_AS_TEXT),
    st.text(alphabet=string.ascii_letters + string.digits + "_.+-", min_size=1, max_size=12),
)
numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 2**64, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan]),
)
scalars = st.one_of(texts, numbers, st.booleans(), st.none())
values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8,
)


# ----------------------------------------------------------------- the rule

def changes(before: dict, after: dict) -> list[str]:
    """What differs between two snapshots, for an assertion message."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` (outside `skip`) with its size and modification time."""
    found = {}
    for path in folder.rglob("*"):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        stat = path.lstat()
        # a folder's own time changes whenever an entry below it does; those entries are listed themselves
        found[str(path.relative_to(folder))] = (-1, -1) if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return found


def half_written(folder: Path) -> list[str]:
    """Staging files an interrupted atomic write would leave (`.<name>.*.tmp`, `.<name>.saving-*`)."""
    if not folder.exists():
        return []
    return [str(p) for p in folder.rglob(".*") if p.name.endswith(".tmp") or ".saving-" in p.name]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """flare.cli.main in this process: (exit status, stdout, stderr)."""
    from flare.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def check_cli(status: int, stderr: str, argv: list[str]) -> str:
    """The rule for a CLI case; returns the outcome ("accepted" or "refused")."""
    shown = f"argv={argv!r}\nstderr={stderr!r}"
    assert "Traceback" not in stderr, shown
    assert status in (0, 2), shown
    if status == 0:
        return "accepted"
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and not PROGRESS.search(line)]
    assert len(lines) == 1 and lines[0].startswith("flare: error: "), shown
    assert "internal error" not in lines[0], shown
    return "refused"


def check_api(call) -> str:
    """The rule for an API case; returns the outcome."""
    from flare.errors import FlareError

    try:
        call()
    except FlareError as error:
        assert "\n" not in str(error) and str(error).strip(), repr(str(error))
        return "refused"
    return "accepted"
