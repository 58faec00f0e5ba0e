"""The cells of benchmarks/english_sides/english_side_report.py: study records grouped into rows, per-language and
average cells with 95% t intervals, paired differences, markdown tables.

A language cell is the mean over its seeds, ± the half width of a 95% t interval (flare.study.stats)
when it has >= 2 seeds. An "avg" cell is, per seed, the mean over the languages, then the mean ± 95% t
half width over seeds, when every seed has the same languages. When they do not (marked "*", e.g. three
seeds of one language and one seed of four others), each language is first averaged over its own seeds
and the cell is the mean ± 95% t half width over languages, so that no language weighs more for having
more seeds. A margin (Δ) pairs runs by (language, seed) present in both methods and summarises the
differences the same way; with a single seed, the interval is over languages, as in
flare.study.report.paired_difference, to which it is equal when every seed has every language (that
function needs complete seeds, so it does not fit partial studies).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flare.study.methods import BASELINE as BASELINE_METHOD
from flare.study.methods import METHODS
from flare.study.stats import t_interval

NOT_MEASURED = "not measured"
BASELINE = (BASELINE_METHOD, None, None, None)  # translate-train (LoRA): reads no English side

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


def fmt(cell: Cell | None, **kwargs) -> str:
    return NOT_MEASURED if cell is None else cell.format(**kwargs)


def record_languages(records: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(r["language"] for r in records))


def record_fusions(records: Sequence[Mapping]) -> list[str]:
    """FLARE's fusions in the records (add_relu when there is no FLARE record)."""
    return list(dict.fromkeys(r.get("fusion") for r in records if r["method"] == "flare")) or ["add_relu"]


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
    stat, half = t_interval(list(units))  # the interval flare.study.report.paired_difference uses
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


def margin_cells(margins: Values, languages: Sequence[str]) -> list[str]:
    """A row of paired margins: one signed cell per language (mean over its seeds), then their average
    (with one seed, ± over languages)."""
    return [*(fmt(language_cell(margins, lang), signed=True, count_languages=False) for lang in languages),
            fmt(average(margins, language_interval=True), signed=True)]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], text: int = 1) -> list[str]:
    """A markdown table whose first ``text`` columns are left-aligned and the rest right-aligned."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * text + "---:|" * (len(header) - text),
            *("| " + " | ".join(row) + " |" for row in rows)]
