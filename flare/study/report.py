"""Comparison reports: turn the run records of ``flare compare`` (``results.jsonl``) into a per-run CSV,
markdown tables with seed spreads and paired FLARE-vs-LoRA differences, and a grouped bar chart.

Conventions (those of the FLARE paper): scores are percentages, higher is better, and the "avg" column
is the mean over the non-English target languages. The average is taken per seed first and only then
summarised over seeds, so its ± is the seed-to-seed spread of the average, not a mix of language and
seed spread. A seed enters the average only when it has a run for every target language of its task;
anything left out is listed under the table instead of being dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flare import extras
from flare.errors import FlareError
from flare.files import atomic_path, read_jsonl, write_atomically
from flare.mt.languages import ENGLISH
from flare.study.methods import BASELINE, table_rank
from flare.study.stats import Stat, seed_stat, t_interval, t_quantile_975

AVG = "avg"
REQUIRED = ("run_id", "task", "method", "label", "language", "seed", "metric", "score")
CSV_COLUMNS = ("run_id", "task", "model", "method", "fusion", "label", "language", "seed", "metric", "score",
               "n_test", "wall_time_s", "finished_at")


@dataclass
class TaskSummary:
    """One table: rows are method labels, columns are languages plus ``"avg"``."""

    task: str
    metric: str
    languages: list[str]
    averaged_languages: list[str]
    labels: list[str]
    methods: dict[str, str]  # label -> method
    cells: dict[str, dict[str, Stat]]  # label -> language or "avg" -> Stat
    notes: list[str] = field(default_factory=list)


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``results.jsonl``. A later record with the same ``run_id`` replaces the earlier one (a
    rerun). Blank lines are allowed; anything else that is not a valid record (a last line cut short by
    a killed writer included: see `flare.files.read_jsonl`) raises FlareError naming the file and line,
    because a silently skipped run would change the averages."""
    path = Path(path)
    if not path.is_file():
        raise FlareError(f"report: results file {path} does not exist")
    records: dict[str, dict[str, Any]] = {}
    for number, record in read_jsonl(path, shared_lock=True):  # locked: no append is halfway through
        _validate(record, f"{path}:{number}")
        records.pop(record["run_id"], None)  # a rerun moves to where it was last written
        records[record["run_id"]] = record
    return list(records.values())


def _validate(record: Mapping[str, Any], where: str) -> None:
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise FlareError(f"report: {where}: record lacks {', '.join(missing)}")
    for key in ("run_id", "task", "method", "label", "language", "metric"):  # they key tables and dicts
        if not isinstance(record[key], str) or not record[key]:
            raise FlareError(f"report: {where}: {key} must be a non-empty string, got {str(record[key])[:60]!r}")
    score, seed = record["score"], record["seed"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise FlareError(f"report: {where}: score must be a finite number, got {score!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FlareError(f"report: {where}: seed must be an integer, got {seed!r}")


def _group_keys(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """run_id -> table key: the task, or "task [model]" when one file holds several models of a task,
    so that different backbones never share a mean."""
    models: dict[str, set[str]] = {}
    for r in records:
        models.setdefault(r["task"], set()).add(str(r.get("model", "")))
    return {r["run_id"]: r["task"] if len(models[r["task"]]) == 1 else f"{r['task']} [{r.get('model', '')}]"
            for r in records}


def _scores(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, dict[int, float]]]]:
    """table -> label -> language -> seed -> score; two run_ids for the same cell are an error (not a
    rerun: the run ids disagree, so one of them belongs to something else)."""
    keys, table, seen = _group_keys(records), {}, {}
    for r in records:
        slot = (keys[r["run_id"]], r["label"], r["language"], r["seed"])
        if slot in seen:
            raise FlareError(f"report: runs {seen[slot]!r} and {r['run_id']!r} are the same method, language and seed")
        seen[slot] = r["run_id"]
        score = float(r["score"])
        table.setdefault(slot[0], {}).setdefault(r["label"], {}).setdefault(r["language"], {})[r["seed"]] = score
    return table


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, TaskSummary]:
    """Per table (task): mean ± sample std over seeds for each method label and language, and the
    average over non-English languages (per seed, then over seeds). Raises FlareError when a task mixes
    metrics, since their numbers cannot share a table."""
    if not records:
        raise FlareError("report: no finished runs to summarise")
    keys = _group_keys(records)
    scores = _scores(records)
    summaries: dict[str, TaskSummary] = {}
    for key, by_label in scores.items():
        rows = [r for r in records if keys[r["run_id"]] == key]
        metrics = sorted({str(r["metric"]) for r in rows})
        if len(metrics) > 1:
            raise FlareError(f"report: task {key!r} mixes metrics {metrics}; rerun with one metric")
        languages = list(dict.fromkeys(r["language"] for r in rows))
        targets = [lang for lang in languages if lang not in ENGLISH]
        methods = {r["label"]: str(r["method"]) for r in rows}
        first = {label: i for i, label in reversed(list(enumerate(r["label"] for r in rows)))}
        labels = sorted(by_label, key=lambda label: (table_rank(methods[label]), first[label]))  # the paper's order
        summary = TaskSummary(key, metrics[0], languages, targets, labels, methods, {})
        for label in labels:
            cells = {lang: seed_stat(list(seeds.values())) for lang, seeds in by_label[label].items()}
            averages, incomplete = _seed_averages(by_label[label], targets)
            if averages:
                cells[AVG] = seed_stat(list(averages.values()))
            by_gap: dict[tuple[str, ...], list[str]] = {}  # one note per gap, not one per seed
            for seed, absent in incomplete.items():
                by_gap.setdefault(tuple(absent), []).append(str(seed))
            for absent, seeds in by_gap.items():
                summary.notes.append(f"{label}: seed {', '.join(seeds)} lacks {', '.join(absent)}; left out of its avg")
            summary.cells[label] = cells
        summaries[key] = summary
    return summaries


def _seed_averages(by_language: Mapping[str, Mapping[int, float]], targets: Sequence[str],
                   ) -> tuple[dict[int, float], dict[int, list[str]]]:
    """seed -> mean over the target languages, for seeds that have all of them; and seed -> missing ones."""
    seeds = sorted({seed for runs in by_language.values() for seed in runs})
    averages, incomplete = {}, {}
    for seed in seeds:
        absent = [lang for lang in targets if seed not in by_language.get(lang, {})]
        if absent:
            incomplete[seed] = absent
        elif targets:
            averages[seed] = math.fsum(by_language[lang][seed] for lang in targets) / len(targets)
    return averages, incomplete


def paired_difference(records: Sequence[Mapping[str, Any]], method_a_label: str, method_b_label: str,
                      task: str) -> dict[str, Any]:
    """Language-averaged score of A minus B (e.g. FLARE minus translate-train LoRA) on one task.

    Runs pair by (language, seed); only seeds where both methods have every target (non-English)
    language are used, so both sides average the same languages. The 95% CI is a t-interval: with two
    or more paired seeds, over the per-seed differences (each the mean of the per-language differences),
    because seeds are the replications that a rerun would redraw; with one seed, over the per-language
    differences (``unit == "language"``), which says how consistently A beats B across languages but
    carries no seed noise. A t-interval rather than a bootstrap because with 2-5 seeds or a handful of
    languages a bootstrap has too few distinct resamples to reach its nominal coverage, and the
    t-interval is deterministic. ``ci95`` is None when there is only one unit (no spread to estimate).
    """
    table = _scores(records).get(task)
    if table is None:
        raise FlareError(f"report: no runs for task {task!r}")
    for label in (method_a_label, method_b_label):
        if label not in table:
            raise FlareError(f"report: task {task!r} has no runs labelled {label!r}; labels: {sorted(table)}")
    a, b = table[method_a_label], table[method_b_label]
    targets = [lang for lang in dict.fromkeys([*a, *b]) if lang not in ENGLISH]
    seeds_a, _ = _seed_averages(a, targets)
    seeds_b, _ = _seed_averages(b, targets)
    seeds = sorted(set(seeds_a) & set(seeds_b))
    if not seeds or not targets:
        raise FlareError(f"report: {method_a_label!r} and {method_b_label!r} share no complete seed on {task!r}")
    per_language = {lang: math.fsum(a[lang][s] - b[lang][s] for s in seeds) / len(seeds) for lang in targets}
    per_seed = {s: math.fsum(a[lang][s] - b[lang][s] for lang in targets) / len(targets) for s in seeds}
    unit, values = ("seed", list(per_seed.values())) if len(seeds) > 1 else ("language", list(per_language.values()))
    stat, half = t_interval(values)
    ci = None if half is None else (stat.mean - half, stat.mean + half)
    return {"mean": stat.mean, "ci95": ci, "n": stat.n, "unit": unit, "sd": stat.std, "task": task,
            "method_a": method_a_label, "method_b": method_b_label, "seeds": seeds, "languages": targets,
            "per_seed": per_seed, "per_language": per_language}


def _csv_text(records: Sequence[Mapping[str, Any]], summaries: Mapping[str, TaskSummary]) -> str:
    """One row per run: the fixed columns, then ``metrics.<name>``, then any extra keys (sorted), so
    the column order only changes when the records gain a key."""
    metric_names = sorted({name for r in records for name in (r.get("metrics") or {})})
    extras = sorted({k for r in records for k in r} - set(CSV_COLUMNS) - {"metrics"})
    keys = _group_keys(records)

    def order(r: Mapping[str, Any]) -> tuple:
        s = summaries[keys[r["run_id"]]]
        return (list(summaries).index(s.task), s.labels.index(r["label"]), s.languages.index(r["language"]), r["seed"])

    def cell(value: Any) -> Any:
        return "" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else value

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"metrics.{m}" for m in metric_names), *extras])
    for r in sorted(records, key=order):
        metrics = r.get("metrics") or {}
        writer.writerow([cell(r.get(c)) for c in CSV_COLUMNS] + [cell(metrics.get(m)) for m in metric_names]
                        + [cell(r.get(k)) for k in extras])
    return buffer.getvalue()


def _markdown(records: Sequence[Mapping[str, Any]], summaries: Mapping[str, TaskSummary], title: str,
              against: Sequence[str] = ()) -> str:
    lines = [f"# {title}", ""]
    for s in summaries.values():
        columns = [*s.languages, AVG]
        lines += [f"## {s.task} ({s.metric}, %)", "", "| method | " + " | ".join(columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        # Bold by the displayed (rounded) mean, so ties on screen are all bold.
        best = {c: max((round(s.cells[row][c].mean, 1) for row in s.labels if c in s.cells[row]), default=None)
                for c in columns}
        for label in s.labels:
            cells = []
            for c in columns:
                stat = s.cells[label].get(c)
                text = "–" if stat is None else stat.format()
                cells.append(f"**{text}**" if stat is not None and round(stat.mean, 1) == best[c] else text)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        english = [lang for lang in s.languages if lang in ENGLISH]
        lines += ["", f"avg: mean over {', '.join(s.averaged_languages) or 'no'} target languages per seed, "
                  f"then mean ± sample std over seeds" + (f" ({', '.join(english)} excluded)." if english else ".")]
        lines += [f"- note: {note}" for note in s.notes]
        joint = {r["label"] for r in records if r.get("joint")}  # a per-language LoRA row is the baseline
        baselines = [row for row in s.labels if s.methods[row] == BASELINE and row not in joint]
        for baseline in [*(baselines if len(baselines) == 1 else []), *(a for a in against if a in s.labels)]:
            lines += _difference_table(records, s, baseline)
        lines += _joint_table(records, s)
        lines += ["", *_wall_time_table(records, s)]
        lines.append("")
    return "\n".join(lines)


def _difference_cells(records: Sequence[Mapping[str, Any]], label: str, baseline: str, s: TaskSummary) -> str:
    """The "Δ avg | 95% CI | n" cells of `label` minus `baseline`, or the reason there are none."""
    try:
        d = paired_difference(records, label, baseline, s.task)
    except FlareError as error:  # e.g. no shared complete seed: say so in the report
        return f"– | – | {error}"
    ci = "–" if d["ci95"] is None else f"[{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]"
    return f"{d['mean']:+.1f} | {ci} | {d['n']} {d['unit']}s"


def _difference_table(records: Sequence[Mapping[str, Any]], s: TaskSummary, baseline: str) -> list[str]:
    """Every other method minus `baseline`, with its 95% CI, as markdown lines."""
    diffs = [f"| {label} | {_difference_cells(records, label, baseline, s)} |"
             for label in s.labels if label != baseline]
    if not diffs:
        return []
    intro = (f"Paired difference vs {baseline} (avg, runs paired by language and seed; "
             "95% t-interval over seeds, or over languages with one seed):")
    return ["", intro, "", "| method | Δ avg | 95% CI | n |", "|---|---:|---:|---|", *diffs]


def _joint_table(records: Sequence[Mapping[str, Any]], s: TaskSummary) -> list[str]:
    """Each joint adapter's rows minus the per-language adapters of the same method (the same run id
    without its `joint/` part), with the 95% CI of `paired_difference`."""
    keys = _group_keys(records)
    label_of = {r["run_id"]: r["label"] for r in records if keys[r["run_id"]] == s.task}
    pairs = {(r["label"], label_of[per_language]) for r in records if keys[r["run_id"]] == s.task
             and r.get("joint") and not r.get("held_out")
             and (per_language := r["run_id"].replace("/joint/", "/", 1)) in label_of}
    rows = [f"| {joint} | {per_language} | {_difference_cells(records, joint, per_language, s)} |"
            for joint, per_language in sorted(pairs, key=lambda pair: s.labels.index(pair[0]))]
    if not rows:
        return []
    return ["", "One joint adapter minus one adapter per language (avg, paired by language and seed; "
            "95% t-interval over seeds, or over languages with one seed):", "",
            "| joint | per-language | Δ avg | 95% CI | n |", "|---|---|---:|---:|---|", *rows]


def _wall_time_table(records: Sequence[Mapping[str, Any]], s: TaskSummary) -> list[str]:
    """Runs, median and total ``wall_time_s`` per method: the cost side of the comparison, read from the
    same records as the scores so that the two never come from different runs."""
    keys, rows = _group_keys(records), []
    for label in s.labels:
        times = [float(r["wall_time_s"]) for r in records if keys[r["run_id"]] == s.task and r["label"] == label
                 and isinstance(r.get("wall_time_s"), (int, float)) and not isinstance(r["wall_time_s"], bool)]
        if times:
            rows.append(f"| {label} | {len(times)} | {statistics.median(times):,.0f} | {math.fsum(times):,.0f} |")
    if not rows:
        return []
    return ["Wall time per run (training and evaluation, seconds):", "",
            "| method | runs | median | total |", "|---|---:|---:|---:|", *rows]


def _plot(summaries: Mapping[str, TaskSummary], path: Path, title: str) -> None:
    # The object API with an explicit Agg canvas: no pyplot state, no display, and no global
    # matplotlib.use() that would change the backend of the process that imported us. Imported
    # here: matplotlib is the optional `plots` extra.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(6.0, 1.1 * max(len(s.languages) + 1 for s in summaries.values())) + 2.5,
                             3.6 * len(summaries)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(summaries), 1, squeeze=False)[:, 0]
    # One colour per method across all panels, so a method is recognisable from task to task.
    all_labels = list(dict.fromkeys(label for s in summaries.values() for label in s.labels))
    palette = [f"C{i % 10}" for i in range(len(all_labels))]
    for ax, s in zip(axes, summaries.values(), strict=True):
        columns = [*s.languages, AVG]
        width = 0.8 / len(s.labels)
        for i, label in enumerate(s.labels):
            stats = [s.cells[label].get(c) for c in columns]
            xs = [j + (i - (len(s.labels) - 1) / 2) * width for j in range(len(columns))]
            # Single-seed cells get no error bar (NaN), rather than a zero-height one that looks like certainty.
            errors = [st.std if st and st.std is not None else math.nan for st in stats]
            ax.bar(xs, [st.mean if st else math.nan for st in stats], width, label=label,
                   color=palette[all_labels.index(label)],
                   yerr=None if all(math.isnan(e) for e in errors) else errors, capsize=2)
        ax.set_xticks(range(len(columns)), columns)
        ax.set_ylabel(f"{s.metric} (%)")
        ax.set_title(s.task)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(title)
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=120)


def write_report(records: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike,
                 title: str | None = None, against: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and ``results.png`` into ``out_dir``, each atomically.
    ``against``: method labels that get their own paired-difference table after translate-train
    LoRA's. Returns ``{"csv": ..., "markdown": ..., "png": ...}``."""
    summaries = summarize(records)
    labels = {label for summary in summaries.values() for label in summary.labels}
    unknown = [label for label in against if label not in labels]
    if unknown:
        raise FlareError(f"report: no runs labelled {unknown[0]!r}; labels: {', '.join(sorted(labels))}")
    title = title or "FLARE comparison"
    out = Path(out_dir)
    paths = {"csv": out / "results.csv", "markdown": out / "results.md", "png": out / "results.png"}
    write_atomically(paths["csv"], _csv_text(records, summaries))
    write_atomically(paths["markdown"], _markdown(records, summaries, title, against))
    if extras.is_available("matplotlib"):
        _plot(summaries, paths["png"], title)
    else:  # the tables are the result; the figure is optional
        print(f"note: {extras.missing_message('matplotlib')}; results.png not written", file=sys.stderr)
        del paths["png"]
    return paths


def report(results_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
           against: Sequence[str] = ()) -> dict[str, Path]:
    """Summarise the runs of `flare compare` into a CSV, a markdown table and a bar chart.

    Reads RESULTS (the results.jsonl that `flare compare` appends to; a rerun of a run_id replaces the
    earlier record) and writes results.csv (one row per run), results.md (per task: methods x
    languages, "mean ± std" over seeds, best per column in bold, "avg" over the non-English target
    languages, each method's paired difference to translate-train LoRA with a 95% CI, and each
    method's runs, median and total wall time) and
    results.png (grouped bars with seed std error bars) into OUT_DIR, by default RESULTS' folder.
    Each label in AGAINST (e.g. "FLARE (cross_attention)") gets a paired-difference table of its own.
    """
    results_path = Path(results_path)
    records = load_results(results_path)
    if not records:
        raise FlareError(f"report: {results_path} holds no finished runs yet")
    out_dir = results_path.parent if out_dir is None else Path(out_dir)
    try:
        return write_report(
            records, out_dir, title=f"FLARE comparison: {results_path.parent.name or results_path.stem}",
            against=against,
        )
    except OSError as error:
        raise FlareError(f"report: cannot write to {out_dir} ({error.strerror or error})") from None


__all__ = ["Stat", "TaskSummary", "load_results", "paired_difference", "report", "summarize", "t_quantile_975",
           "write_report"]
