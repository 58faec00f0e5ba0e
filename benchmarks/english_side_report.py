r"""Where does FLARE's gain come from (issue 18): the tables and plot of the English-side studies
benchmarks/reproduce/nusax-controls.yaml and benchmarks/reproduce/nusax-realistic.yaml.

Command (from the repository root):
    FLARE_DATA_DIR=../shared/data .venv/bin/python benchmarks/english_side_report.py \
        --controls benchmarks/results/nusax-controls/results.jsonl \
        --realistic benchmarks/results/nusax-realistic/results.jsonl

Writes report.md (also printed), margin_vs_chrf.png and chrf.json into --out (default
benchmarks/results/english-sides/). The studies may be partial: every cell says how many seeds (s)
and languages (l) it has, and a cell without runs says "not measured".

Statistics. A language cell is the mean over its seeds, ± the half width of a 95% t interval
(flare.study.stats) when it has >= 2 seeds. An "avg" cell is, per seed, the mean over the languages,
then the mean ± 95% t half width over seeds, when every seed has the same languages. When they do not
(marked "*", e.g. three seeds of one language and one seed of four others), each language is first
averaged over its own seeds and the cell is the mean ± 95% t half width over languages, so that no
language weighs more for having more seeds. A margin (Δ) pairs runs by (language, seed) present in both
methods and summarises the differences the same way; with a single seed, the interval is over
languages, as in flare.study.report.paired_difference, to which it is equal when every seed has every
language (that function needs complete seeds, so it does not fit partial studies).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flare.errors import FlareError  # noqa: E402
from flare.files import write_atomically  # noqa: E402
from flare.study.methods import BASELINE as BASELINE_METHOD  # noqa: E402
from flare.study.methods import METHODS  # noqa: E402
from flare.study.report import load_results  # noqa: E402
from flare.study.stats import seed_stat, t_quantile_975  # noqa: E402

NOT_MEASURED = "not measured"
CONTROL_SIDES = ("gold", "shuffled", "self")
REALISTIC_SIDES = ("gold", "lexicon", "noise10", "noise30", "noise50")
STUDY_LANGUAGES = ("ace", "bbc", "jav", "nij", "sun")  # both studies' languages: chrF is computed for all
BASELINE = (BASELINE_METHOD, None, None, None)  # translate-train (LoRA): reads no English side
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "english-sides"

Key = tuple  # (method, fusion, train side, test side); a side is None where the method reads none
Values = dict  # (language, seed) -> score


@dataclass(frozen=True)
class Cell:
    mean: float
    half: float | None  # 95% t half width; None with a single unit
    seeds: int  # the most seeds any language has
    languages: tuple[str, ...]
    uneven: bool = False  # the seeds do not cover the same languages: the units are languages
    fewest_seeds: int | None = None  # with uneven seeds, the fewest any language has

    def format(self, signed: bool = False, count_languages: bool = True) -> str:
        number = f"{self.mean:+.1f}" if signed else f"{self.mean:.1f}"
        spread = "" if self.half is None else f" ± {self.half:.1f}"
        seeds = f"{self.fewest_seeds}-{self.seeds}" if self.fewest_seeds not in (None, self.seeds) else self.seeds
        count = f"{seeds}s/{len(self.languages)}l" if count_languages else f"{seeds}s"
        return f"{number}{spread} ({count}{'*' if self.uneven else ''})"


def _fmt(cell: Cell | None, **kwargs) -> str:
    return NOT_MEASURED if cell is None else cell.format(**kwargs)


def row_key(record: Mapping) -> Key:
    """A record's row: the sides it does not read are None, a missing side it reads is gold."""
    method = record["method"]
    known = METHODS.get(method)
    train = (record.get("train_english") or "gold") if known and known.english_in_training else None
    test = (record.get("test_english") or "gold") if known and known.english_at_test else None
    return (method, record.get("fusion") if known and known.fused else None, train, test)


def row_name(key: Key) -> str:
    method, fusion, train, test = key
    base = METHODS[method].run_label(fusion) if method in METHODS else method
    sides = [f"{stage} {side}" for stage, side in (("train", train), ("test", test)) if side is not None]
    return f"{base} [{', '.join(sides)}]" if sides else base


def by_row(records: Sequence[Mapping]) -> dict[Key, Values]:
    rows: dict[Key, Values] = {}
    for r in records:
        rows.setdefault(row_key(r), {})[(r["language"], int(r["seed"]))] = float(r["score"])
    return rows


def _t_cell(units: Sequence[float], seeds: int, languages: Sequence[str], uneven: bool = False) -> Cell:
    stat = seed_stat(list(units))
    half = None if stat.std is None else t_quantile_975(stat.n - 1) * stat.std / math.sqrt(stat.n)
    return Cell(stat.mean, half, seeds, tuple(languages), uneven)


def language_cell(values: Values, language: str) -> Cell | None:
    """Mean over the seeds of one language, with a 95% t interval over seeds."""
    scores = [v for (lang, _), v in sorted(values.items()) if lang == language]
    return _t_cell(scores, len(scores), [language]) if scores else None


def average(values: Values, language_interval: bool = False) -> Cell | None:
    """Per seed the mean over the languages, then the mean and 95% t interval over seeds. With one seed
    and ``language_interval``, the interval is over languages (used for differences). When the seeds
    cover different languages, the units are languages, each the mean over its own seeds."""
    if not values:
        return None
    seeds = sorted({seed for _, seed in values})
    languages = list(dict.fromkeys(lang for lang, _ in sorted(values, key=lambda k: (k[1], k[0]))))
    if len({frozenset(lang for lang, seed in values if seed == s) for s in seeds}) > 1:
        per_language = {lang: [v for (other, _), v in values.items() if other == lang] for lang in languages}
        counts = [len(v) for v in per_language.values()]
        cell = _t_cell([math.fsum(v) / len(v) for v in per_language.values()], max(counts), languages, True)
        return dataclasses.replace(cell, fewest_seeds=min(counts))
    if len(seeds) == 1 and language_interval:
        return _t_cell([values[(lang, seeds[0])] for lang in languages], 1, languages)
    per_seed = [[v for (_, seed), v in values.items() if seed == s] for s in seeds]
    return _t_cell([math.fsum(v) / len(v) for v in per_seed], len(seeds), languages)


def matched(a: Values, b: Values) -> Values:
    """A minus B on the (language, seed) pairs present in both."""
    return {k: a[k] - b[k] for k in a.keys() & b.keys()}


def difference(a: Values | None, b: Values | None) -> Cell | None:
    """Paired difference A - B over the matched (language, seed) pairs, or None without any."""
    return average(matched(a or {}, b or {}), language_interval=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text: int = 1) -> list[str]:
    """A markdown table whose first ``text`` columns are left-aligned and the rest right-aligned."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * text + "---:|" * (len(header) - text),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _languages(records: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(r["language"] for r in records))


def _fusions(records: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(r.get("fusion") for r in records if r["method"] == "flare")) or ["add_relu"]


def _with_extra(expected: list[Key], rows: Mapping[Key, Values]) -> list[Key]:
    extra = sorted((k for k in rows if k not in expected), key=lambda k: tuple(str(x) for x in k))
    return expected + extra


def controls_keys(records: Sequence[Mapping]) -> list[Key]:
    keys = [BASELINE, *(("translate-train+english", None, s, None) for s in CONTROL_SIDES)]
    for method, fusion in [("input-fusion", None), *(("flare", f) for f in _fusions(records))]:
        keys += [(method, fusion, tr, te) for tr in CONTROL_SIDES for te in CONTROL_SIDES]
    return _with_extra(keys, by_row(records))


def controls_section(records: Sequence[Mapping]) -> list[str]:
    rows, languages = by_row(records), _languages(records)
    base = rows.get(BASELINE)
    body = []
    for key in controls_keys(records):
        values = rows.get(key, {})
        cells = [_fmt(language_cell(values, lang), count_languages=False) for lang in languages]
        delta = "reference" if key == BASELINE else _fmt(difference(values, base), signed=True)
        body.append([row_name(key), *cells, _fmt(average(values)), delta])
    return ["## Controls: same extra compute, no English information", "",
            *_table(["method [English sides]", *languages, "avg", "Δ vs translate-train (LoRA)"], body), "",
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
             f"translate-train (LoRA), reads no English (reference): {_fmt(average(base or {}))}", ""]
    header = ["train \\ test", *sides]
    for method, fusion in [("input-fusion", None), *(("flare", f) for f in _fusions(records))]:
        name = row_name((method, fusion, None, None))
        score, margin = [], []
        for train in sides:
            cells = [rows.get((method, fusion, train, test)) for test in sides]
            score.append([train, *(_fmt(average(v or {})) for v in cells)])
            margin.append([train, *(_fmt(difference(v, base), signed=True) for v in cells)])
        lines += [f"### {name}: score", "", *_table(header, score), "",
                  f"### {name}: margin over translate-train (LoRA)", "", *_table(header, margin), ""]
    tt = [rows.get(("translate-test", None, None, test)) for test in sides]
    lines += ["### translate-test per test side", "", *_table(["", *sides], [
        ["score", *(_fmt(average(v or {})) for v in tt)],
        ["margin over translate-train (LoRA)", *(_fmt(difference(v, base), signed=True) for v in tt)]]), "",
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
    ("realistic", ("input-fusion", None, "lexicon", "lexicon"), "input fusion, lexicon MT at train and test"),
    ("realistic", ("translate-test", None, None, "gold"), "translate-test, gold English"),
    ("realistic", ("translate-test", None, None, "lexicon"), "translate-test, lexicon MT"),
)
LORA_OF = {"remedy": "realistic"}  # the remedy study trains only FLARE, on the realistic study's stage 1


def headline_section(studies: Mapping[str, Sequence[Mapping]]) -> list[str]:
    """Per language, the margin over translate-train (LoRA) of the same study of the rows that answer
    the issue's two questions: is the gain the English information, and how much survives MT."""
    rows = {study: by_row(records) for study, records in studies.items()}
    fusion = _fusions([r for records in studies.values() for r in records])[0]
    languages = list(dict.fromkeys(lang for records in studies.values() for lang in _languages(records)))
    lora = {study: found.get(BASELINE) or {} for study, found in rows.items()}
    body = []
    for study, key, label in HEADLINE:
        key = (key[0], fusion, *key[2:]) if key[0] == "flare" else key
        base, values = lora.get(LORA_OF.get(study, study), {}), rows.get(study, {}).get(key)
        margins = matched(values or {}, base)
        cells = [_fmt(language_cell(margins, lang), signed=True, count_languages=False) for lang in languages]
        body.append([label, study, *cells, _fmt(difference(values, base), signed=True)])
    realistic_lora = lora.get("realistic", {})
    body.append(["translate-train (LoRA) itself, score", "realistic",
                 *(_fmt(language_cell(realistic_lora, lang), count_languages=False) for lang in languages),
                 _fmt(average(realistic_lora))])
    return ["## Headline: margin over translate-train (LoRA), per language", "",
            *_table(["run", "study", *languages, "avg"], body, text=2), "",
            "Each margin is paired with the LoRA of the same study, language and seed; per language, mean ± 95% t "
            "half width over its seeds; avg as in the tables below."]


def remedy_section(realistic: Sequence[Mapping], mixed: Sequence[Mapping], gated: Sequence[Mapping],
                   test: str = "lexicon") -> list[str]:
    """FLARE scored with the machine English `test` side, trained on gold, on that side, on a mix, with
    and without the learned English gate: the realistic study's rows and the remedy studies' rows
    (all from one stage-1 model), each beside translate-train (LoRA) of the realistic study."""
    plain, mix, gate = by_row(realistic), by_row(mixed), by_row(gated)
    base = plain.get(BASELINE)
    fusion = _fusions([*realistic, *mixed, *gated])[0]
    languages = list(dict.fromkeys([*_languages(realistic), *_languages(mixed), *_languages(gated)]))
    rows = [("translate-train (LoRA), no English", base)]
    for name, source in (("FLARE", {**plain, **mix}), ("FLARE, English gate", gate)):
        for train in ("gold", "lexicon", "mix-lexicon"):
            rows.append((f"{name} [train {train}, test {test}]", source.get(("flare", fusion, train, test))))
    body = [[label, *(_fmt(language_cell(v or {}, lang), count_languages=False) for lang in languages),
             _fmt(average(v or {})), "reference" if v is base else _fmt(difference(v, base), signed=True)]
            for label, v in rows]
    return [f"## Remedies for a machine-made English side (test side: {test})", "",
            *_table(["run", *languages, "avg", "Δ vs translate-train (LoRA)"], body), "",
            "Mixed training: half the training examples with lexicon-MT English, half gold "
            "(benchmarks/reproduce/nusax-remedy.yaml); the gate: one learned scalar per fused module scaling the "
            "English side's change (adapter.english_gate, benchmarks/reproduce/nusax-remedy-gate.yaml). Δ paired "
            "by (language, seed) as above."]


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
            *_table(["study", "method", "records", "seconds", "hours"], body, text=2)]


def load_chrf(out: Path, given: Path | None, languages: Sequence[str], sides: Sequence[str], seed: int,
              split: str, data_dir: str | None) -> tuple[dict, list[str]]:
    """{language: {side: {"chrf", "bleu"}}}: --chrf if given, else out/chrf.json plus whatever it lacks,
    computed with benchmarks/english_sides.py (and cached back into out/chrf.json)."""
    notes: list[str] = []
    if given is not None:
        table = json.loads(given.read_text(encoding="utf-8"))
    else:
        cache = out / "chrf.json"
        table = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
        todo = {lang: [s for s in sides if s not in table.get(lang, {})] for lang in languages}
        if any(todo.values()):
            try:
                script = Path(__file__).with_name("english_sides.py")
                spec = importlib.util.spec_from_file_location("english_sides", script)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                for lang, missing in todo.items():
                    if missing:
                        scores = module.side_quality(lang, missing, split, seed, data_dir)
                        table.setdefault(lang, {}).update(scores)
            except (FlareError, OSError, ImportError, ValueError) as error:
                notes.append(f"chrF not computed ({error}); pass --chrf JSON (benchmarks/english_sides.py --json)")
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "chrf.json", json.dumps(table, indent=2, sort_keys=True) + "\n")
    return table, notes


def margin_points(studies: Mapping[str, Sequence[Mapping]], chrf: Mapping) -> list[dict]:
    """One point per study, fused method and English side used at both train and test."""
    points = []
    for study, records in studies.items():
        rows = by_row(records)
        sides = CONTROL_SIDES if study == "controls" else realistic_sides(records)
        for method, fusion in [("input-fusion", None), *(("flare", f) for f in _fusions(records))]:
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
             _fmt(p["margin"], signed=True)] for p in points]
    return ["## Margin over translate-train (LoRA) against the English side's chrF (train side = test side)", "",
            *_table(["study", "method", "English side", "chrF vs gold English", "margin"], body, text=3), "",
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
    return records, f"{name}: {path}: {len(records)} records, languages {_languages(records)}, seeds {seeds}"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controls", type=Path, default=ROOT / "benchmarks/results/nusax-controls/results.jsonl")
    parser.add_argument("--realistic", type=Path, default=ROOT / "benchmarks/results/nusax-realistic/results.jsonl")
    parser.add_argument("--remedy", type=Path, default=ROOT / "benchmarks/results/nusax-remedy/results.jsonl")
    parser.add_argument("--remedy-gate", type=Path,
                        default=ROOT / "benchmarks/results/nusax-remedy-gate/results.jsonl")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--chrf", type=Path, help="chrF table, as benchmarks/english_sides.py --json writes it")
    parser.add_argument("--data-dir", default=None, help="datasets folder (default: $FLARE_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the seeded sides (shuffled, noise) for chrF")
    parser.add_argument("--split", default="test", help="NusaX split the chrF is measured on")
    args = parser.parse_args(argv)
    controls, controls_note = _load(args.controls, "controls")
    realistic, realistic_note = _load(args.realistic, "realistic")
    mixed, mixed_note = _load(args.remedy, "remedy (mixed English)")
    gated, gated_note = _load(args.remedy_gate, "remedy (English gate)")
    studies = {"controls": controls, "realistic": realistic, "remedy": mixed, "remedy-gate": gated}
    languages = list(dict.fromkeys([*STUDY_LANGUAGES, *_languages([*controls, *realistic])]))
    sides = list(dict.fromkeys([*CONTROL_SIDES, *realistic_sides(realistic)]))
    chrf, chrf_notes = load_chrf(args.out, args.chrf, languages, sides, args.seed, args.split, args.data_dir)
    points = margin_points({"controls": controls, "realistic": realistic}, chrf)
    plot(points, args.out / "margin_vs_chrf.png")
    lines = ["# Where does FLARE's gain come from? English-side controls and realistic sides (issue 18)", "",
             f"- {controls_note}", f"- {realistic_note}", f"- {mixed_note}", f"- {gated_note}",
             *(f"- {note}" for note in chrf_notes), "",
             *headline_section(studies), "",
             *controls_section(controls), "", *realistic_section(realistic), "",
             *remedy_section(realistic, mixed, gated), "", *points_section(points), "",
             *wall_time_section(studies), ""]
    text = "\n".join(lines)
    write_atomically(args.out / "report.md", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
