"""benchmarks/english_sides/english_side_report.py on small synthetic study records: every expected number is
computed here from the synthetic scores, not copied from the script's output."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from flare.study.report import paired_difference
from flare.study.stats import t_quantile_975

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "english_sides" / "english_side_report.py"
spec = importlib.util.spec_from_file_location("english_side_report", SCRIPT)
esr = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = esr  # dataclasses look their module up there
spec.loader.exec_module(esr)

LORA = ("translate-train", None, None, None)


def record(method, language, seed, score, train=None, test=None, fusion=None, wall=10.0):
    name = f"{method}-{fusion}" if fusion else method
    run_id = f"nusax/{name}/train-{train}/test-{test}/{language}/seed{seed}"
    return {"run_id": run_id, "task": "nusax", "method": method, "fusion": fusion, "label": name,
            "language": language, "seed": seed, "metric": "macro_f1", "score": score,
            "train_english": train, "test_english": test, "wall_time_s": wall}


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def half_width(values: list[float]) -> float:
    return t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def test_cells_average_over_seeds_then_languages():
    scores = {("ace", 1): 70.0, ("ace", 2): 74.0, ("ace", 3): 75.5, ("bbc", 1): 60.0, ("bbc", 2): 61.0,
              ("bbc", 3): 65.0}
    rows = esr.by_row([record("translate-train", lang, seed, v) for (lang, seed), v in scores.items()])
    values = rows[LORA]
    ace = esr.language_cell(values, "ace")
    ace_scores = [scores[("ace", s)] for s in (1, 2, 3)]
    assert ace.mean == pytest.approx(statistics.mean(ace_scores))
    assert ace.half == pytest.approx(half_width(ace_scores))
    assert (ace.seeds, ace.languages) == (3, ("ace",))
    per_seed = [(scores[("ace", s)] + scores[("bbc", s)]) / 2 for s in (1, 2, 3)]
    avg = esr.average(values)
    assert avg.mean == pytest.approx(statistics.mean(per_seed))
    assert avg.half == pytest.approx(half_width(per_seed))
    assert (avg.seeds, set(avg.languages), avg.uneven) == (3, {"ace", "bbc"}, False)
    one = esr.language_cell({("ace", 1): 70.0}, "ace")
    assert one.half is None and one.format() == "70.0 (1s/1l)"
    assert esr.language_cell(values, "jav") is None
    # seeds with different languages: each language is averaged over its own seeds, the interval is
    # over languages (ace's three seeds do not make it weigh three times bbc's one), and flagged
    uneven = esr.average({("ace", 1): 70.0, ("bbc", 1): 60.0, ("ace", 2): 80.0, ("ace", 3): 84.5})
    per_language = [(70.0 + 80.0 + 84.5) / 3, 60.0]
    assert uneven.mean == pytest.approx(statistics.mean(per_language)) and uneven.uneven
    assert uneven.half == pytest.approx(half_width(per_language))
    assert uneven.format().endswith("(1-3s/2l*)")


def test_paired_difference_uses_only_matched_language_seed_pairs():
    flare = {("ace", 1): 80.0, ("bbc", 1): 71.0, ("ace", 2): 90.0, ("jav", 1): 55.0}
    lora = {("ace", 1): 72.0, ("bbc", 1): 65.0, ("bbc", 2): 10.0, ("sun", 1): 40.0}
    d = esr.difference(flare, lora)
    diffs = [flare[k] - lora[k] for k in (("ace", 1), ("bbc", 1))]  # the only pairs in both
    assert d.mean == pytest.approx(statistics.mean(diffs))
    assert d.half == pytest.approx(half_width(diffs))  # one seed: the interval is over languages
    assert (d.seeds, sorted(d.languages)) == (1, ["ace", "bbc"])
    assert esr.difference({("ace", 2): 1.0}, {("ace", 1): 1.0}) is None
    assert esr.difference(None, lora) is None


def test_difference_equals_flare_report_on_complete_seeds():
    scores = {(lang, seed): 60 + 3 * i + seed * 1.7 + (j % 2) for i, lang in enumerate(["ace", "bbc", "jav"])
              for j, seed in enumerate([1, 2, 3])}
    records = [record("translate-train", lang, seed, v) for (lang, seed), v in scores.items()]
    records += [record("flare", lang, seed, v + 2 + seed * (lang == "bbc"), "gold", "gold", "add_relu")
                for (lang, seed), v in scores.items()]
    rows = esr.by_row(records)
    mine = esr.difference(rows[("flare", "add_relu", "gold", "gold")], rows[LORA])
    theirs = paired_difference(records, "flare-add_relu", "translate-train", "nusax")
    assert mine.mean == pytest.approx(theirs["mean"])
    assert mine.mean - mine.half == pytest.approx(theirs["ci95"][0])
    assert mine.seeds == theirs["n"] == 3


def test_report_marks_missing_cells_and_writes_the_plot(tmp_path, capsys):
    controls = write(tmp_path / "controls.jsonl", [
        record("translate-train", "ace", 1, 70.0, wall=100.0), record("translate-train", "ace", 2, 72.0, wall=50.0),
        record("flare", "ace", 1, 79.0, "gold", "gold", "add_relu", wall=300.0),
        record("flare", "ace", 2, 84.0, "gold", "gold", "add_relu", wall=200.0),
        record("flare", "ace", 1, 60.0, "shuffled", "shuffled", "add_relu"),
    ])
    chrf = tmp_path / "chrf_in.json"
    chrf.write_text(json.dumps({"ace": {"gold": {"chrf": 100.0, "bleu": 100.0},
                                        "shuffled": {"chrf": 16.0, "bleu": 0.2}}}), encoding="utf-8")
    out = tmp_path / "out"
    text = esr.main(["--controls", str(controls), "--realistic", str(tmp_path / "absent.jsonl"),
                     "--out", str(out), "--chrf", str(chrf)])
    assert capsys.readouterr().out.strip() == text.strip()
    assert (out / "report.md").read_text(encoding="utf-8") == text
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    gold = lines["FLARE (add_relu) [train gold, test gold]"]
    margins = [79.0 - 70.0, 84.0 - 72.0]
    assert f"{statistics.mean(margins):+.1f} ± {half_width(margins):.1f} (2s/1l)" in gold
    assert f"{statistics.mean([79.0, 84.0]):.1f} ± {half_width([79.0, 84.0]):.1f} (2s)" in gold
    assert "not measured" in lines["FLARE (add_relu) [train self, test gold]"]
    assert "not measured" in lines["translate-train + English (LoRA) [train gold]"]
    shuffled = lines["FLARE (add_relu) [train shuffled, test shuffled]"]
    assert f"{60.0 - 70.0:+.1f} (1s/1l)" in shuffled  # paired with seed 1 only
    # the realistic study is absent: every matrix cell says so
    assert lines["noise30"].count("not measured") == 5
    assert "translate-train (LoRA), reads no English (reference): not measured" in text
    # plot points and wall time
    assert "| controls | FLARE (add_relu) | shuffled | 16.0 (1l) | -10.0 (1s/1l) |" in text
    assert f"| controls | FLARE (add_relu) | 3 | {300 + 200 + 10:,.0f} |" in text
    png = out / "margin_vs_chrf.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000
    assert json.loads((out / "chrf.json").read_text(encoding="utf-8"))["ace"]["shuffled"]["chrf"] == 16.0



def test_remedy_rows_pair_with_the_realistic_lora():
    realistic = [record("translate-train", "jav", 1, 70.0), record("translate-train", "sun", 1, 60.0),
                 record("flare", "jav", 1, 72.0, train="gold", test="lexicon", fusion="add_relu")]
    mixed = [record("flare", "jav", 1, 75.0, train="mix-lexicon", test="lexicon", fusion="add_relu"),
             record("flare", "sun", 1, 66.0, train="mix-lexicon", test="lexicon", fusion="add_relu")]
    gated = [record("flare", "jav", 1, 71.0, train="gold", test="lexicon", fusion="add_relu")]
    lines = esr.remedy_section(realistic, mixed, gated)
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ") for line in lines if line.startswith("| ")}
    delta = {name: cells[-1].removesuffix(" |") for name, cells in rows.items()}
    assert delta["FLARE [train gold, test lexicon]"].startswith(f"{72.0 - 70.0:+.1f}")
    mix = [75.0 - 70.0, 66.0 - 60.0]  # paired by language
    assert delta["FLARE [train mix-lexicon, test lexicon]"].startswith(f"{statistics.mean(mix):+.1f} ± "
                                                                      f"{half_width(mix):.1f}")
    assert delta["FLARE, English gate [train gold, test lexicon]"].startswith(f"{71.0 - 70.0:+.1f}")
    assert delta["FLARE, English gate [train lexicon, test lexicon]"] == esr.NOT_MEASURED


def test_the_gate_pairs_with_plain_flare_of_the_same_sides_and_reports_its_values():
    def gated(language, score, train, low, mean, high):
        return {**record("flare", language, 1, score, train=train, test="lexicon", fusion="add_relu"),
                "english_gate": {"min": low, "mean": mean, "max": high}}

    realistic = [record("flare", "jav", 1, 72.0, train="gold", test="lexicon", fusion="add_relu"),
                 record("flare", "sun", 1, 64.0, train="gold", test="lexicon", fusion="add_relu"),
                 record("flare", "sun", 1, 61.0, train="lexicon", test="lexicon", fusion="add_relu")]
    mixed = [record("flare", "jav", 1, 75.0, train="mix-lexicon", test="lexicon", fusion="add_relu")]
    gates = [gated("jav", 70.0, "gold", 0.5, 1.2, 2.0), gated("sun", 65.0, "gold", 0.8, 1.6, 3.0),
             gated("jav", 77.0, "mix-lexicon", 0.9, 1.1, 1.3),
             record("flare", "sun", 1, 60.0, train="lexicon", test="lexicon", fusion="add_relu")]  # no gate values
    lines = esr.gate_section(realistic, mixed, gates)
    rows = {line.split(" | ")[0].removeprefix("| "): line.removesuffix(" |").split(" | ")[1:]
            for line in lines if line.startswith("| ")}
    gold = [70.0 - 72.0, 65.0 - 64.0]
    assert rows["train gold, test lexicon"] == [
        f"{gold[0]:+.1f} (1s)", f"{gold[1]:+.1f} (1s)",
        f"{statistics.mean(gold):+.1f} ± {half_width(gold):.1f} (1s/2l)",
        f"0.50 to 3.00, mean {(1.2 + 1.6) / 2:.2f} (2 runs)"]
    mix = rows["train mix-lexicon, test lexicon"]
    assert mix[-2:] == [f"{77.0 - 75.0:+.1f} (1s/1l)", "0.90 to 1.30, mean 1.10 (1 run)"]
    assert rows["train lexicon, test lexicon"][-1] == esr.NOT_MEASURED
    assert not any(name.endswith("test gold") for name in rows)  # no gated run was scored on gold
    assert esr.gate_section(realistic, mixed, [])[-1] == esr.NOT_MEASURED


def test_headline_pairs_each_language_with_its_own_study_lora():
    controls = [record("translate-train", "ace", 1, 70.0), record("translate-train", "ace", 2, 74.0),
                record("translate-train", "jav", 1, 60.0),
                record("flare", "ace", 1, 80.0, "gold", "gold", "add_relu"),
                record("flare", "ace", 2, 83.0, "gold", "gold", "add_relu"),
                record("flare", "jav", 1, 66.0, "gold", "gold", "add_relu")]
    realistic = [record("translate-train", "ace", 1, 71.0), record("translate-test", "ace", 1, 65.0, test="lexicon")]
    remedy = [record("flare", "ace", 1, 76.0, "mix-lexicon", "lexicon", "add_relu")]
    lines = esr.headline_section({"controls": controls, "realistic": realistic, "remedy": remedy})
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ") for line in lines if line.startswith("| ")}
    gold = rows["FLARE, gold English (the oracle)"]
    ace = [80.0 - 70.0, 83.0 - 74.0]
    assert gold[2] == f"{statistics.mean(ace):+.1f} ± {half_width(ace):.1f} (2s)"
    assert gold[3] == f"{66.0 - 60.0:+.1f} (1s)"
    # uneven seeds: the average is over the two languages, each the mean of its own seeds
    per_language = [statistics.mean(ace), 66.0 - 60.0]
    assert gold[4].startswith(f"{statistics.mean(per_language):+.1f} ± {half_width(per_language):.1f} (1-2s/2l*)")
    # the realistic rows pair with the realistic study's LoRA, not the controls'
    assert rows["translate-test, lexicon MT"][2] == f"{65.0 - 71.0:+.1f} (1s)"
    assert rows["translate-test, lexicon MT"][3] == "not measured"
    # the remedy study trains no LoRA of its own: it pairs with the realistic study's
    assert rows["FLARE, train half gold half lexicon, test lexicon"][2] == f"{76.0 - 71.0:+.1f} (1s)"


def test_ladder_rows_of_a_method_compare_the_same_runs():
    lora = {("ace", 1): 70.0, ("ace", 2): 72.0, ("bbc", 1): 60.0, ("bbc", 2): 64.0}
    realistic = [record("translate-train", lang, seed, v) for (lang, seed), v in lora.items()]
    gold = {("ace", 1): 85.0, ("ace", 2): 88.0, ("bbc", 1): 80.0, ("bbc", 2): 81.0}
    realistic += [record("flare", lang, seed, v, "gold", "gold", "add_relu") for (lang, seed), v in gold.items()]
    noisy = {("ace", 1): 79.0, ("bbc", 1): 66.0}  # the noise side has seed 1 only
    realistic += [record("flare", lang, seed, v, "noise30", "noise30", "add_relu") for (lang, seed), v in noisy.items()]
    realistic += [record("flare", "ace", 1, 90.0, "gold", "noise30", "add_relu"),  # not the same side: no row
                  record("translate-test", "ace", 1, 74.0, test="noise30")]
    chrf = {"ace": {"gold": {"chrf": 100.0}, "noise30": {"chrf": 64.0}}, "bbc": {"noise30": {"chrf": 66.0}}}
    lines = esr.ladder_section(realistic, chrf)
    rows = {tuple(line.split(" | ")[:2]): line.removesuffix(" |").split(" | ")[2:]
            for line in lines if line.startswith("| ")}
    assert rows[("| noise30", "chrF vs gold English")] == ["64.0", "66.0", "65.0"]
    assert rows[("| gold", "chrF vs gold English")] == ["100.0", "not measured", "100.0"]
    # FLARE's gold row is restricted to seed 1, the seed its noise30 row has: the rows differ in the side only
    flare_gold = rows[("| gold", "FLARE (add_relu), margin")]
    assert flare_gold[:2] == [f"{85.0 - 70.0:+.1f} (1s)", f"{80.0 - 60.0:+.1f} (1s)"]
    margins = [noisy[k] - lora[k] for k in (("ace", 1), ("bbc", 1))]
    assert rows[("| noise30", "FLARE (add_relu), margin")][2] == (
        f"{statistics.mean(margins):+.1f} ± {half_width(margins):.1f} (1s/2l)")
    assert rows[("| noise30", "translate-test, margin")][:2] == [f"{74.0 - 70.0:+.1f} (1s)", "not measured"]
    assert ("| noise10", "FLARE (add_relu), margin") not in rows  # nothing measured on noise10
    assert ("| gold", "input-level fusion, margin") not in rows


def test_fused_methods_are_compared_on_the_same_runs_and_sides():
    realistic = [record("input-fusion", "ace", 1, 80.0, "lexicon", "lexicon"),
                 record("input-fusion", "ace", 2, 78.0, "lexicon", "lexicon"),
                 record("input-fusion", "bbc", 1, 70.0, "lexicon", "lexicon"),
                 record("flare", "ace", 1, 75.0, "lexicon", "lexicon", "add_relu"),
                 record("flare", "ace", 2, 77.0, "lexicon", "lexicon", "add_relu"),
                 record("flare", "bbc", 1, 60.0, "gold", "lexicon", "add_relu"),  # other sides: not paired
                 record("flare", "bbc", 1, 50.0, "gold", "gold", "add_relu")]
    lines = esr.fused_methods_section(realistic)
    rows = {line.split(" | ")[0].removeprefix("| "): line.removesuffix(" |").split(" | ")[1:]
            for line in lines if line.startswith("| ")}
    ace = [80.0 - 75.0, 78.0 - 77.0]
    assert rows["train lexicon, test lexicon"] == [
        f"{statistics.mean(ace):+.1f} ± {half_width(ace):.1f} (2s)", "not measured",
        f"{statistics.mean(ace):+.1f} ± {half_width(ace):.1f} (2s/1l)"]
    assert set(rows) == {"English sides", "train lexicon, test lexicon"}
    assert esr.fused_methods_section([record("flare", "ace", 1, 75.0, "gold", "gold", "add_relu")])[-1] == (
        esr.NOT_MEASURED)
