"""flare.study.report on a synthetic record set whose expected numbers are worked out by hand below.

LoRA (translate-train) and FLARE, target languages jav/sun/ace plus English (eng), seeds 1 and 2:

    score      LoRA s1  s2 | FLARE s1  s2 | diff s1  s2
    jav           80   82  |     83    85 |      3   3
    sun           70   74  |     72    78 |      2   4
    ace           66   66  |     61    65 |     -5  -1
    eng           90   90  |     91    91 |  (excluded from averages)
    avg (per seed) 72  74  |     72    76 |      0   2

LoRA avg 73 ± sqrt(2); FLARE avg 74 ± sqrt(8); paired difference 1 with sd sqrt(2) over 2 seeds, so
the CI is 1 ± t(0.975, df=1) * sqrt(2)/sqrt(2) = 1 ± 12.706. With seed 1 only, the CI comes from the
per-language differences 3, 2, -5: mean 0, sd sqrt(19), CI 0 ± t(0.975, df=2) * sqrt(19/3).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from flare.errors import FlareError
from flare.study.report import (
    load_results,
    paired_difference,
    report,
    summarize,
    t_quantile_975,
    write_report,
)

LORA, FLARE = "translate-train (LoRA)", "FLARE (add_relu)"
SCORES = {
    LORA: {"jav": (80, 82), "sun": (70, 74), "ace": (66, 66), "eng": (90, 90)},
    FLARE: {"jav": (83, 85), "sun": (72, 78), "ace": (61, 65), "eng": (91, 91)},
}
T_DF1, T_DF2 = 12.706204736174698, 4.302652729749464  # Student t 0.975 quantiles (tables)


def _record(label: str, language: str, seed: int, score: float, **extra: Any) -> dict[str, Any]:
    method, fusion = ("translate-train", None) if label == LORA else ("flare", "add_relu")
    slug = "lora" if label == LORA else "flare-add_relu"
    return {"run_id": f"nusax/{slug}/{language}/seed{seed}", "task": "nusax", "model": "multilingual-e5-small",
            "method": method, "fusion": fusion, "label": label, "language": language, "seed": seed,
            "metric": "macro_f1", "score": score, "metrics": {"macro_f1": score, "accuracy": score + 0.5},
            "n_test": 400, "wall_time_s": 93.2, "finished_at": "2026-11-21T10:00:00Z", **extra}


def _records(seeds: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    return [_record(label, lang, seed, float(values[seed - 1]))
            for label, by_lang in SCORES.items() for lang, values in by_lang.items() for seed in seeds]


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_t_quantile_matches_tables() -> None:
    for df, expected in [(1, T_DF1), (2, T_DF2), (4, 2.776445), (9, 2.262157), (30, 2.042272)]:
        assert t_quantile_975(df) == pytest.approx(expected, abs=1e-5)


def test_summary_means_stds_and_english_excluded() -> None:
    summary = summarize(_records())["nusax"]
    assert summary.metric == "macro_f1"
    assert summary.languages == ["jav", "sun", "ace", "eng"]
    assert summary.averaged_languages == ["jav", "sun", "ace"]
    assert summary.labels == [LORA, FLARE]  # paper order: translate-train before FLARE
    lora, flare = summary.cells[LORA], summary.cells[FLARE]
    assert (lora["jav"].mean, lora["jav"].std, lora["jav"].n) == (81, pytest.approx(math.sqrt(2)), 2)
    assert (flare["sun"].mean, flare["sun"].std) == (75, pytest.approx(math.sqrt(18)))
    assert lora["ace"].std == 0
    assert (lora["avg"].mean, lora["avg"].std) == (pytest.approx(73), pytest.approx(math.sqrt(2)))
    assert (flare["avg"].mean, flare["avg"].std) == (pytest.approx(74), pytest.approx(math.sqrt(8)))
    assert summary.notes == []


def test_paired_difference_two_seeds() -> None:
    d = paired_difference(_records(), FLARE, LORA, "nusax")
    assert (d["mean"], d["n"], d["unit"]) == (pytest.approx(1), 2, "seed")
    assert d["per_seed"] == {1: pytest.approx(0), 2: pytest.approx(2)}
    assert d["ci95"] == (pytest.approx(1 - T_DF1), pytest.approx(1 + T_DF1))
    assert d["languages"] == ["jav", "sun", "ace"]


def test_single_seed_uses_spread_over_languages() -> None:
    records = _records(seeds=(1,))
    summary = summarize(records)["nusax"]
    assert summary.cells[LORA]["avg"].mean == pytest.approx(72) and summary.cells[LORA]["avg"].std is None
    assert summary.cells[FLARE]["jav"].format() == "83.0"
    d = paired_difference(records, FLARE, LORA, "nusax")
    half = T_DF2 * math.sqrt(19 / 3)
    assert (d["mean"], d["n"], d["unit"]) == (pytest.approx(0), 3, "language")
    assert d["ci95"] == (pytest.approx(-half), pytest.approx(half))


def test_incomplete_seed_is_left_out_of_avg_and_noted() -> None:
    records = [r for r in _records() if not (r["label"] == FLARE and r["language"] == "ace" and r["seed"] == 2)]
    summary = summarize(records)["nusax"]
    assert summary.cells[FLARE]["avg"].n == 1 and summary.cells[FLARE]["avg"].mean == pytest.approx(72)
    assert summary.notes == [f"{FLARE}: seed 2 lacks ace; left out of its avg"]
    assert paired_difference(records, FLARE, LORA, "nusax")["seeds"] == [1]


def test_rerun_replaces_earlier_record(tmp_path: Path) -> None:
    rerun = _record(LORA, "jav", 1, 90.0)  # same run_id as the first LoRA jav seed-1 record
    records = load_results(_write_jsonl(tmp_path / "results.jsonl", [*_records(), rerun]))
    assert len(records) == 16
    jav = [r["score"] for r in records if r["run_id"] == rerun["run_id"]]
    assert jav == [90.0]
    assert summarize(records)["nusax"].cells[LORA]["jav"].mean == 86


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    lines = [json.dumps(r) for r in _records()[:2]]
    path.write_text(lines[0] + "\n\n" + lines[1] + "\n" + '{"run_id": "x", "score": ' + "\n", encoding="utf-8")
    with pytest.raises(FlareError, match=r"results\.jsonl: line 4 is not valid JSON \(Expecting value\)"):
        load_results(path)
    bad = dict(_records()[0], score="high")
    with pytest.raises(FlareError, match=r"results\.jsonl:1: score must be a finite number"):
        load_results(_write_jsonl(path, [bad]))
    with pytest.raises(FlareError, match=r"results\.jsonl:1: record lacks seed"):
        load_results(_write_jsonl(path, [{k: v for k, v in _records()[0].items() if k != "seed"}]))


def test_same_cell_under_two_run_ids_is_an_error() -> None:
    clash = dict(_records()[0], run_id="nusax/other/jav/seed1")
    with pytest.raises(FlareError, match="same method, language and seed"):
        summarize([*_records(), clash])


def test_write_report_outputs(tmp_path: Path) -> None:
    records = _records()
    records[0]["gpu"] = "H100"  # an extra key the pipeline may add: kept as a column
    records[0]["wall_time_s"] = 300.0
    del records[-1]["wall_time_s"]
    paths = write_report(records, tmp_path / "out", title="NusaX test")
    assert set(paths) == {"csv", "markdown", "png"} and all(p.is_file() for p in paths.values())
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left

    markdown = paths["markdown"].read_text(encoding="utf-8")
    table = markdown.split("Paired difference")[0]  # the method rows of the score table, not of the diffs
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert rows[LORA] == f"| {LORA} | 81.0 ± 1.4 | 72.0 ± 2.8 | **66.0 ± 0.0** | 90.0 ± 0.0 | 73.0 ± 1.4 |"
    assert rows[FLARE] == (
        f"| {FLARE} | **84.0 ± 1.4** | **75.0 ± 4.2** | 63.0 ± 2.8 | **91.0 ± 0.0** | **74.0 ± 2.8** |"
    )
    assert "Paired difference vs translate-train (LoRA)" in markdown
    assert "| FLARE (add_relu) | +1.0 | [-11.7, +13.7] | 2 seeds |" in markdown
    # 8 runs per method at 93.2 s, except that one LoRA run took 300 s and one FLARE run has no time
    assert f"| {LORA} | 8 | 93 | 952 |" in markdown and f"| {FLARE} | 7 | 93 | 652 |" in markdown

    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        rows_back = list(csv.DictReader(handle))
    assert list(rows_back[0])[:10] == ["run_id", "task", "model", "method", "fusion", "label", "language", "seed",
                                       "metric", "score"]
    assert list(rows_back[0])[-3:] == ["metrics.accuracy", "metrics.macro_f1", "gpu"]
    by_id = {row["run_id"]: row for row in rows_back}
    assert len(by_id) == len(records)
    for record in records:
        row = by_id[record["run_id"]]
        assert float(row["score"]) == record["score"] and int(row["seed"]) == record["seed"]
        assert float(row["metrics.accuracy"]) == record["metrics"]["accuracy"]
        assert (row["label"], row["language"], row["fusion"]) == (record["label"], record["language"],
                                                                  record["fusion"] or "")
    assert by_id[records[0]["run_id"]]["gpu"] == "H100"

    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_single_seed_markdown_is_plain_and_report_defaults_to_results_folder(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "results.jsonl", _records(seeds=(1,)))
    paths = report(path)
    assert paths["markdown"].parent == tmp_path
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert f"| {LORA} | 80.0 | 70.0 | **66.0** | 90.0 | **72.0** |" in markdown
    assert f"| {FLARE} | **83.0** | **72.0** | 61.0 | **91.0** | **72.0** |" in markdown  # a tie: both bold
    assert "| FLARE (add_relu) | +0.0 | [-10.8, +10.8] | 3 languages |" in markdown
    with pytest.raises(FlareError, match="no finished runs"):
        report(_write_jsonl(tmp_path / "empty.jsonl", []))


def test_against_adds_a_difference_table_per_label_and_refuses_unknown_labels(tmp_path: Path) -> None:
    records = _records()
    markdown = write_report(records, tmp_path / "out", against=[FLARE])["markdown"].read_text(encoding="utf-8")
    lora_minus_flare = paired_difference(records, LORA, FLARE, "nusax")
    assert f"Paired difference vs {LORA}" in markdown and f"Paired difference vs {FLARE}" in markdown
    low, high = lora_minus_flare["ci95"]
    assert lora_minus_flare["mean"] == pytest.approx(-1.0)
    assert f"| {LORA} | -1.0 | [{low:+.1f}, {high:+.1f}] | 2 seeds |" in markdown
    with pytest.raises(FlareError, match=r"report: no runs labelled 'FLARE \(mul\)'; labels: FLARE \(add_relu\), "):
        write_report(records, tmp_path / "other", against=["FLARE (mul)"])
    assert not (tmp_path / "other").exists()  # nothing written
