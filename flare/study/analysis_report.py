"""The tables and figures of `flare analyze` (flare/study/analyze.py), written from its saved
(model, language) results:
* alignment.csv: one row per language, model and layer;
* alignment.md: per language and model, the means over layers and the best layer, and the
  cross-language table with Spearman's rho;
* alignment-<language>.png: layers on the x axis, one line per model (cosine and retrieval);
* alignment-vs-gain.png: per language, the base model's alignment against FLARE's margin over
  LoRA in the study's results.jsonl, with Spearman's rho and its p-value (scipy).

A language's "alignment" in the cross-language figure is MEXA's mean: the base model's retrieval
accuracy, averaged over both directions and over all layers.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flare import extras
from flare.errors import FlareError
from flare.files import atomic_path, write_atomically
from flare.study.report import load_results

COLUMNS = ("language", "model", "layer", "cosine", "retrieval_to_english", "retrieval_to_target", "n_pairs")


def flare_margins(results: Path, task: str, languages: Sequence[str], fusion: str) -> dict[str, float]:
    """Per language: FLARE's mean score over seeds minus translate-train LoRA's (gold English sides,
    the folder's own stage-2 settings), in the task metric's points. Refuses a language without both."""
    if not results.is_file():
        raise FlareError(f"analyze: the cross-language plot needs the study's results ({results} is missing); "
                         "pass --cross_language false to skip it")
    scores: dict[tuple[str, str], list[float]] = {}
    for r in load_results(results):
        gold = r.get("train_english") in (None, "gold") and r.get("test_english") in (None, "gold")
        if r["task"] != task or not gold or r.get("variant") or "test_file" in r:
            continue
        if r["method"] == "translate-train" or (r["method"] == "flare" and r.get("fusion") == fusion):
            scores.setdefault((r["method"], r["language"]), []).append(float(r["score"]))
    missing = [lang for lang in languages
               if ("flare", lang) not in scores or ("translate-train", lang) not in scores]
    if missing:
        raise FlareError(f"analyze: {results} lacks FLARE ({fusion}) or translate-train results for "
                         f"{', '.join(missing)}; the cross-language plot needs both (or --cross_language false)")
    return {lang: statistics.fmean(scores[("flare", lang)]) - statistics.fmean(scores[("translate-train", lang)])
            for lang in languages}


def mean_retrieval(layers: Sequence[Mapping[str, float]]) -> float:
    """MEXA's mean alignment: retrieval accuracy averaged over both directions and all layers."""
    return statistics.fmean((row["retrieval_to_english"] + row["retrieval_to_target"]) / 2 for row in layers)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (scipy)."""
    extras.check("scipy")
    from scipy.stats import spearmanr  # an optional extra: imported only when the plot is asked for

    with warnings.catch_warnings():  # constant input: rho is NaN, and the report says so
        warnings.simplefilter("ignore")
        result = spearmanr(xs, ys)
    return float(result.statistic), float(result.pvalue)


def _csv(records: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in records:
        for row in r["layers"]:
            writer.writerow([r["language"], r["model"], row["layer"], *(f"{row[k]:.6f}" for k in COLUMNS[3:6]),
                             r["n_pairs"]])
    return buffer.getvalue()


def _markdown(records: Sequence[Mapping[str, Any]], cross: dict[str, Any] | None) -> str:
    lines = ["# Alignment with English", "",
             "Means over layers (0: embeddings) of the cosine similarity of mean-pooled target and English "
             "sentence vectors and of nearest-neighbour retrieval accuracy; best layer: the layer of the highest "
             "retrieval accuracy (mean of both directions).", "",
             "| language | model | pairs | cosine | retrieval target->en | retrieval en->target | best layer |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in records:
        layers = r["layers"]
        best = max(layers, key=lambda row: row["retrieval_to_english"] + row["retrieval_to_target"])
        best_value = (best["retrieval_to_english"] + best["retrieval_to_target"]) / 2
        lines.append(
            f"| {r['language']} | {r['model']} | {r['n_pairs']} | {statistics.fmean(x['cosine'] for x in layers):.3f} "
            f"| {statistics.fmean(x['retrieval_to_english'] for x in layers):.3f} "
            f"| {statistics.fmean(x['retrieval_to_target'] for x in layers):.3f} | {best['layer']} ({best_value:.3f}) |"
        )
    if cross is not None:
        base_models = sorted({str(r.get("base_model")) for r in records if r["model"] == "base"})
        lines += ["", "## Base alignment against FLARE's margin over LoRA", "",
                  f"Base model: {', '.join(base_models)}; FLARE and translate-train LoRA scores (mean over seeds, "
                  f"gold English sides) from {cross['source']}.", "",
                  "| language | base alignment (mean retrieval) | FLARE - LoRA (points) |", "|---|---:|---:|"]
        lines += [f"| {lang} | {a:.3f} | {m:+.2f} |" for lang, a, m in cross["rows"]]
        lines += ["", f"Spearman's rho = {cross['rho']:.3f}, p = {cross['p']:.3g} ({len(cross['rows'])} languages)."]
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float):
    # the object API with an explicit Agg canvas, as report.py: no pyplot state, no global backend change;
    # imported here: matplotlib is the optional `plots` extra
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=110)


def _language_plot(language: str, records: Sequence[Mapping[str, Any]], path: Path) -> None:
    figure = _figure(11, 3.4)
    axes = figure.subplots(1, 3)
    for ax, key, title in zip(axes, COLUMNS[3:6], ("cosine", "retrieval target->en", "retrieval en->target")):
        for r in records:
            ax.plot([row["layer"] for row in r["layers"]], [row[key] for row in r["layers"]], marker="o",
                    markersize=3, label=r["model"])
        ax.set_xlabel("layer")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.suptitle(f"{language}: alignment with English ({records[0]['n_pairs']} pairs)")
    _save(figure, path)


def _cross_plot(cross: dict[str, Any], path: Path) -> None:
    figure = _figure(5.5, 4.2)
    ax = figure.subplots()
    for language, alignment, margin in cross["rows"]:
        ax.scatter(alignment, margin, color="C0")
        ax.annotate(language, (alignment, margin), textcoords="offset points", xytext=(4, 3), fontsize="small")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("base model alignment (mean retrieval accuracy)")
    ax.set_ylabel("FLARE - LoRA (points)")
    ax.set_title(f"Spearman's rho = {cross['rho']:.2f}, p = {cross['p']:.3g}")
    ax.grid(alpha=0.3)
    _save(figure, path)


def write_analysis(records: Sequence[Mapping[str, Any]], folder: Path,
                   margins: Mapping[str, float] | None, source: str | None = None) -> dict[str, Path]:
    """Write the tables and figures; `margins` (language -> FLARE - LoRA, read from `source`) adds
    the cross-language ones."""
    cross = None
    if margins is not None:
        base = {r["language"]: mean_retrieval(r["layers"]) for r in records if r["model"] == "base"}
        rows = [(lang, base[lang], margins[lang]) for lang in margins]
        rho, p = spearman([a for _, a, _ in rows], [m for _, _, m in rows])
        cross = {"rows": rows, "rho": rho, "p": p, "source": source}
    paths = {"csv": folder / "alignment.csv", "markdown": folder / "alignment.md"}
    write_atomically(paths["csv"], _csv(records))
    write_atomically(paths["markdown"], _markdown(records, cross))
    if not extras.is_available("matplotlib"):  # the tables are the result; the figures are optional
        print(f"note: {extras.missing_message('matplotlib')}; the alignment figures are not written", file=sys.stderr)
        return paths
    for language in dict.fromkeys(r["language"] for r in records):
        paths[f"png_{language}"] = folder / f"alignment-{language}.png"
        _language_plot(language, [r for r in records if r["language"] == language], paths[f"png_{language}"])
    if cross is not None:
        paths["png_cross"] = folder / "alignment-vs-gain.png"
        if any(math.isnan(v) for v in (cross["rho"], cross["p"])):
            print("note: Spearman's rho is undefined (constant alignment or margins)", file=sys.stderr)
        _cross_plot(cross, paths["png_cross"])
    return paths
