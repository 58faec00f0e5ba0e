r"""Where does FLARE's gain come from (issue 18): the tables and plot of the English-side studies
benchmarks/reproduce/nusax-controls.yaml and benchmarks/reproduce/nusax-realistic.yaml.

Command (from the repository root):
    FLARE_DATA_DIR=../shared/data .venv/bin/python benchmarks/english_sides/english_side_report.py \
        --controls benchmarks/results/nusax-controls/results.jsonl \
        --realistic benchmarks/results/nusax-realistic/results.jsonl

Writes report.md (also printed), margin_vs_chrf.png and chrf.json into --out (default
benchmarks/results/english-sides/). The studies may be partial: every cell says how many seeds (s)
and languages (l) it has, and a cell without runs says "not measured".

Statistics (cells, intervals, paired margins): benchmarks/english_sides/english_side_cells.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.english_sides.english_side_cells import (  # noqa: E402
    BASELINE,
    NOT_MEASURED,
    Key,
    Values,
    average,
    by_row,
    difference,
    fmt,
    language_cell,
    margin_cells,
    matched,
    record_fusions,
    record_languages,
    row_key,
    row_name,
    table,
)
from benchmarks.english_sides.english_side_remedies import gate_section, remedy_section  # noqa: E402
from flare.errors import FlareError  # noqa: E402
from flare.files import write_atomically  # noqa: E402
from flare.study.report import load_results  # noqa: E402

CONTROL_SIDES = ("gold", "shuffled", "self")
REALISTIC_SIDES = ("gold", "lexicon", "noise10", "noise30", "noise50")
STUDY_LANGUAGES = ("ace", "bbc", "jav", "nij", "sun")  # both studies' languages: chrF is computed for all
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "english-sides"


def _fused_methods(records: Sequence[Mapping]) -> list[tuple[str, str | None]]:
    """The methods that read an English side inside the model, as (method, fusion)."""
    return [("input-fusion", None), *(("flare", f) for f in record_fusions(records))]


def _with_extra(expected: list[Key], rows: Mapping[Key, Values]) -> list[Key]:
    extra = sorted((k for k in rows if k not in expected), key=lambda k: tuple(str(x) for x in k))
    return expected + extra


def controls_keys(records: Sequence[Mapping]) -> list[Key]:
    keys = [BASELINE, *(("translate-train+english", None, s, None) for s in CONTROL_SIDES)]
    for method, fusion in _fused_methods(records):
        keys += [(method, fusion, tr, te) for tr in CONTROL_SIDES for te in CONTROL_SIDES]
    return _with_extra(keys, by_row(records))


def controls_section(records: Sequence[Mapping]) -> list[str]:
    rows, languages = by_row(records), record_languages(records)
    base = rows.get(BASELINE)
    body = []
    for key in controls_keys(records):
        values = rows.get(key, {})
        cells = [fmt(language_cell(values, lang), count_languages=False) for lang in languages]
        delta = "reference" if key == BASELINE else fmt(difference(values, base), signed=True)
        body.append([row_name(key), *cells, fmt(average(values)), delta])
    return ["## Controls: same extra compute, no English information", "",
            *table(["method [English sides]", *languages, "avg", "Δ vs translate-train (LoRA)"], body), "",
            "Cells: mean ± 95% t half width over seeds (Ns/Ml: N seeds, M languages; * seeds cover different "
            "languages: mean of the per-language means, ± over languages). Δ: paired by (language, seed) "
            "present in both rows; with one seed its ± is over languages."]


def realistic_sides(records: Sequence[Mapping]) -> list[str]:
    found = [s for r in records for s in (r.get("train_english"), r.get("test_english")) if s]
    return list(dict.fromkeys([*REALISTIC_SIDES, *found]))


def realistic_section(records: Sequence[Mapping]) -> list[str]:
    rows, sides = by_row(records), realistic_sides(records)
    base = rows.get(BASELINE)
    lines = ["## Realistic English sides: train side (rows) x test side (columns)", "",
             f"translate-train (LoRA), reads no English (reference): {fmt(average(base or {}))}", ""]
    header = ["train \\ test", *sides]
    for method, fusion in _fused_methods(records):
        name = row_name((method, fusion, None, None))
        score, margin = [], []
        for train in sides:
            cells = [rows.get((method, fusion, train, test)) for test in sides]
            score.append([train, *(fmt(average(v or {})) for v in cells)])
            margin.append([train, *(fmt(difference(v, base), signed=True) for v in cells)])
        lines += [f"### {name}: score", "", *table(header, score), "",
                  f"### {name}: margin over translate-train (LoRA)", "", *table(header, margin), ""]
    tt = [rows.get(("translate-test", None, None, test)) for test in sides]
    lines += ["### translate-test per test side", "", *table(["", *sides], [
        ["score", *(fmt(average(v or {})) for v in tt)],
        ["margin over translate-train (LoRA)", *(fmt(difference(v, base), signed=True) for v in tt)]]), "",
        "Cells: average over languages and seeds ± 95% t half width over seeds (Ns/Ml: N seeds, M languages; "
        "* seeds cover different languages: mean of the per-language means, ± over languages). Margins: "
        "paired by (language, seed) present in both; with one seed their ± is over languages. The realistic "
        "cells are those whose test side is not gold."]
    return lines


HEADLINE = (  # (study, row, what it answers); a FLARE row's fusion (None here) is the studies' first
    ("controls", ("flare", None, "gold", "gold"), "FLARE, gold English (the oracle)"),
    ("controls", ("flare", None, "shuffled", "shuffled"), "FLARE, another example's English"),
    ("controls", ("flare", None, "self", "self"), "FLARE, the target sentence as English"),
    ("controls", ("translate-train+english", None, "gold", None), "LoRA + the English as extra examples"),
    ("realistic", ("flare", None, "gold", "lexicon"), "FLARE, train gold, test lexicon MT"),
    ("realistic", ("flare", None, "lexicon", "lexicon"), "FLARE, lexicon MT at train and test"),
    ("remedy", ("flare", None, "mix-lexicon", "lexicon"), "FLARE, train half gold half lexicon, test lexicon"),
    ("realistic", ("input-fusion", None, "gold", "gold"), "input fusion, gold English (the oracle)"),
    ("controls", ("input-fusion", None, "shuffled", "shuffled"), "input fusion, another example's English"),
    ("controls", ("input-fusion", None, "self", "self"), "input fusion, the target sentence as English"),
    ("realistic", ("input-fusion", None, "gold", "lexicon"), "input fusion, train gold, test lexicon MT"),
    ("realistic", ("input-fusion", None, "lexicon", "lexicon"), "input fusion, lexicon MT at train and test"),
    ("realistic", ("translate-test", None, None, "gold"), "translate-test, gold English"),
    ("realistic", ("translate-test", None, None, "lexicon"), "translate-test, lexicon MT"),
)
LORA_OF = {"remedy": "realistic"}  # the remedy study trains only FLARE, on the realistic study's stage 1


def headline_section(studies: Mapping[str, Sequence[Mapping]]) -> list[str]:
    """Per language, the margin over translate-train (LoRA) of the same study of the rows that answer
    the issue's two questions: is the gain the English information, and how much survives MT."""
    rows = {study: by_row(records) for study, records in studies.items()}
    every = [r for records in studies.values() for r in records]
    fusion, languages = record_fusions(every)[0], record_languages(every)
    lora = {study: found.get(BASELINE) or {} for study, found in rows.items()}
    body = []
    for study, key, label in HEADLINE:
        key = (key[0], fusion, *key[2:]) if key[0] == "flare" else key
        base, values = lora.get(LORA_OF.get(study, study), {}), rows.get(study, {}).get(key)
        body.append([label, study, *margin_cells(matched(values or {}, base), languages)])
    realistic_lora = lora.get("realistic", {})
    body.append(["translate-train (LoRA) itself, score", "realistic",
                 *(fmt(language_cell(realistic_lora, lang), count_languages=False) for lang in languages),
                 fmt(average(realistic_lora))])
    return ["## Headline: margin over translate-train (LoRA), per language", "",
            *table(["run", "study", *languages, "avg"], body, text=2), "",
            "Each margin is paired with the LoRA of the same study, language and seed; per language, mean ± 95% t "
            "half width over its seeds; avg as in the tables below."]


LADDER = ("gold", "noise10", "noise30", "noise50", "lexicon")  # by falling quality (chrF vs the gold English)


def ladder_section(records: Sequence[Mapping], chrf: Mapping) -> list[str]:
    """Per language, the margin over translate-train (LoRA) with the same English side at train and
    test, the sides ordered by quality. Each method's rows use the same (language, seed) pairs, those
    measured on every side it has, so that the rows differ only in the English side."""
    title = "## The noise ladder per language: margin over translate-train (LoRA), same side at train and test"
    if not records:
        return [title, "", NOT_MEASURED]
    rows, languages = by_row(records), record_languages(records)
    base = rows.get(BASELINE) or {}
    sides = [s for s in LADDER if s in realistic_sides(records)]
    body = []
    for side in sides:
        scores = [chrf.get(lang, {}).get(side, {}).get("chrf") for lang in languages]
        known = [x for x in scores if x is not None]
        body.append([side, "chrF vs gold English", *(NOT_MEASURED if x is None else f"{x:.1f}" for x in scores),
                     f"{math.fsum(known) / len(known):.1f}" if known else NOT_MEASURED])
    keys = [*(("flare", f) for f in record_fusions(records)), ("input-fusion", None), ("translate-test", None)]
    for method, fusion in keys:
        # row_key drops a side the method does not read (translate-test trains without English)
        per_side = {side: rows.get(row_key({"method": method, "fusion": fusion, "train_english": side,
                                            "test_english": side})) for side in sides}
        margins = {side: matched(v, base) for side, v in per_side.items() if v}
        common = set.intersection(*(set(m) for m in margins.values())) if margins else set()
        for side, margin in margins.items():
            paired = {k: v for k, v in margin.items() if k in common}
            body.append([side, f"{row_name((method, fusion, None, None))}, margin", *margin_cells(paired, languages)])
    return [title, "", *table(["English side", "row", *languages, "avg"], body, text=2), "",
            "chrF: as in the chrF section below (seeded sides at --seed). Each method's margins are paired with "
            "LoRA by (language, seed) and restricted to the pairs the method has on every side listed for it, "
            "so its rows compare the same runs; a side it lacks is left out. translate-test trains nothing "
            "(one run, tested on each side)."]


def fused_methods_section(records: Sequence[Mapping]) -> list[str]:
    """Input-level fusion minus FLARE, paired by (language, seed) on the same train and test sides: which
    of the two fused methods to use with a given English side."""
    title = "## Input-level fusion against FLARE, paired by (language, seed), same sides"
    rows, languages, sides = by_row(records), record_languages(records), realistic_sides(records)
    fusion = record_fusions(records)[0]
    body = []
    for train in sides:
        for test in sides:
            paired = matched(rows.get(("input-fusion", None, train, test)) or {},
                             rows.get(("flare", fusion, train, test)) or {})
            if paired:
                body.append([f"train {train}, test {test}", *margin_cells(paired, languages)])
    if not body:
        return [title, "", NOT_MEASURED]
    return [title, "", *table(["English sides", *languages, "avg"], body), "",
            f"Input-level fusion's score minus FLARE ({fusion})'s, on the runs both have; ± as in the margins."]


def wall_time_section(studies: Mapping[str, Sequence[Mapping]]) -> list[str]:
    body = []
    for study, records in studies.items():
        totals: dict[str, list[float]] = {}
        for r in records:
            time = r.get("wall_time_s")
            if isinstance(time, (int, float)) and not isinstance(time, bool):
                totals.setdefault(row_name((*row_key(r)[:2], None, None)), []).append(float(time))
        body += [[study, name, str(len(t)), f"{math.fsum(t):,.0f}", f"{math.fsum(t) / 3600:.2f}"]
                 for name, t in totals.items()]
    if not body:
        return ["## Wall time", "", NOT_MEASURED]
    return ["## Wall time per method (sum of wall_time_s over its records)", "",
            *table(["study", "method", "records", "seconds", "hours"], body, text=2)]


def load_chrf(out: Path, given: Path | None, languages: Sequence[str], sides: Sequence[str], seed: int,
              split: str, data_dir: str | None) -> tuple[dict, list[str]]:
    """{language: {side: {"chrf", "bleu"}}}: --chrf if given, else out/chrf.json plus whatever it lacks,
    computed with benchmarks/english_sides/english_sides.py (and cached back into out/chrf.json)."""
    notes: list[str] = []
    if given is not None:
        table = json.loads(given.read_text(encoding="utf-8"))
    else:
        cache = out / "chrf.json"
        table = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
        todo = {lang: [s for s in sides if s not in table.get(lang, {})] for lang in languages}
        if any(todo.values()):
            try:
                # imported here, not at the top: only a missing chrF needs it, and it loads the MT stack
                from benchmarks.english_sides import english_sides as module
                for lang, missing in todo.items():
                    if missing:
                        scores = module.side_quality(lang, missing, split, seed, data_dir)
                        table.setdefault(lang, {}).update(scores)
            except (FlareError, OSError, ImportError, ValueError) as error:
                notes.append(f"chrF not computed ({error}); "
                             "pass --chrf JSON (benchmarks/english_sides/english_sides.py --json)")
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "chrf.json", json.dumps(table, indent=2, sort_keys=True) + "\n")
    return table, notes


def margin_points(studies: Mapping[str, Sequence[Mapping]], chrf: Mapping) -> list[dict]:
    """One point per study, fused method and English side used at both train and test."""
    points = []
    for study, records in studies.items():
        rows = by_row(records)
        sides = CONTROL_SIDES if study == "controls" else realistic_sides(records)
        for method, fusion in _fused_methods(records):
            for side in sides:
                margin = difference(rows.get((method, fusion, side, side)), rows.get(BASELINE))
                chrfs = [chrf[lang][side]["chrf"] for lang in (margin.languages if margin else sorted(chrf))
                         if side in chrf.get(lang, {})]
                x = math.fsum(chrfs) / len(chrfs) if chrfs else None
                points.append({"study": study, "method": row_name((method, fusion, None, None)), "side": side,
                               "chrf": x, "chrf_languages": len(chrfs), "margin": margin})
    return points


def points_section(points: Sequence[dict]) -> list[str]:
    body = [[p["study"], p["method"], p["side"],
             NOT_MEASURED if p["chrf"] is None else f"{p['chrf']:.1f} ({p['chrf_languages']}l)",
             fmt(p["margin"], signed=True)] for p in points]
    return ["## Margin over translate-train (LoRA) against the English side's chrF (train side = test side)", "",
            *table(["study", "method", "English side", "chrF vs gold English", "margin"], body, text=3), "",
            # the committed report.md names the script by its path before benchmarks/english_sides/ existed
            "chrF: corpus chrF of the side against the gold English (benchmarks/english_sides.py; --split, seeded "
            "sides at --seed, by default test and 1), "
            "mean over the languages of the margin. Plotted in margin_vs_chrf.png."]


def plot(points: Sequence[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(figure)  # Agg, without pyplot's global state
    ax = figure.subplots()
    methods = list(dict.fromkeys(p["method"] for p in points))
    markers = {"controls": "o", "realistic": "^"}
    drawn = [p for p in points if p["chrf"] is not None and p["margin"] is not None]
    for p in drawn:
        index = methods.index(p["method"])
        colour, x = f"C{index % 10}", p["chrf"] + 0.8 * (index - (len(methods) - 1) / 2)  # methods side by side
        half = p["margin"].half
        ax.errorbar(x, p["margin"].mean, yerr=None if half is None else half, fmt=markers.get(p["study"], "s"),
                    color=colour, capsize=3, label=f"{p['method']} ({p['study']})")
        ax.annotate(p["side"], (x, p["margin"].mean), textcoords="offset points", xytext=(4, 4),
                    fontsize="small")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize="small")
    else:
        ax.text(0.5, 0.5, NOT_MEASURED, ha="center", va="center", transform=ax.transAxes)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("chrF of the English side against the gold English (avg over languages)")
    ax.set_ylabel("margin over translate-train (LoRA), points")
    ax.set_title("FLARE and input-level fusion: margin vs English-side quality (±95% t)")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)


def _load(path: Path, name: str) -> tuple[list[dict], str]:
    if not path.is_file():
        return [], f"{name}: {path} does not exist yet: every cell is {NOT_MEASURED}"
    records = load_results(path)
    seeds = sorted({r["seed"] for r in records})
    return records, f"{name}: {path}: {len(records)} records, languages {record_languages(records)}, seeds {seeds}"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controls", type=Path, default=ROOT / "benchmarks/results/nusax-controls/results.jsonl")
    parser.add_argument("--realistic", type=Path, default=ROOT / "benchmarks/results/nusax-realistic/results.jsonl")
    parser.add_argument("--remedy", type=Path, default=ROOT / "benchmarks/results/nusax-remedy/results.jsonl")
    parser.add_argument("--remedy-gate", type=Path,
                        default=ROOT / "benchmarks/results/nusax-remedy-gate/results.jsonl")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--chrf", type=Path,
                        help="chrF table, as benchmarks/english_sides/english_sides.py --json writes it")
    parser.add_argument("--data-dir", default=None, help="datasets folder (default: $FLARE_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the seeded sides (shuffled, noise) for chrF")
    parser.add_argument("--split", default="test", help="NusaX split the chrF is measured on")
    args = parser.parse_args(argv)
    controls, controls_note = _load(args.controls, "controls")
    realistic, realistic_note = _load(args.realistic, "realistic")
    mixed, mixed_note = _load(args.remedy, "remedy (mixed English)")
    gated, gated_note = _load(args.remedy_gate, "remedy (English gate)")
    studies = {"controls": controls, "realistic": realistic, "remedy": mixed, "remedy-gate": gated}
    languages = list(dict.fromkeys([*STUDY_LANGUAGES, *record_languages([*controls, *realistic])]))
    sides = list(dict.fromkeys([*CONTROL_SIDES, *realistic_sides(realistic)]))
    chrf, chrf_notes = load_chrf(args.out, args.chrf, languages, sides, args.seed, args.split, args.data_dir)
    points = margin_points({"controls": controls, "realistic": realistic}, chrf)
    plot(points, args.out / "margin_vs_chrf.png")
    lines = ["# Where does FLARE's gain come from? English-side controls and realistic sides (issue 18)", "",
             f"- {controls_note}", f"- {realistic_note}", f"- {mixed_note}", f"- {gated_note}",
             *(f"- {note}" for note in chrf_notes), "",
             *headline_section(studies), "",
             *controls_section(controls), "", *realistic_section(realistic), "",
             *ladder_section(realistic, chrf), "",
             *fused_methods_section(realistic), "",
             *remedy_section(realistic, mixed, gated), "", *gate_section(realistic, mixed, gated), "",
             *points_section(points), "",
             *wall_time_section(studies), ""]
    text = "\n".join(lines)
    write_atomically(args.out / "report.md", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
