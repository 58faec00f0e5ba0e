"""Quality against cost of fusing fewer layers (issue 36): one row per `adapter.fuse_layers` setting,
read from the study folders that `benchmarks/reproduce/nusax-cache.yaml` names (LoRA and FLARE fusing
every layer in one folder, each other setting in a folder of its own sharing that stage-1 model).

Per setting: the macro-F1 averaged over the languages (mean and sample sd over seeds), FLARE minus
LoRA paired by language and seed with its 95% t-interval over seeds (flare.study.report's
paired_difference), and the wall time of the setting's runs in total against LoRA's runs on the same
(language, seed) pairs. Only pairs that both have are used. Writes `fuse_layers.md` and
`fuse_layers.png` into --out.

    .venv/bin/python benchmarks/fuse_layers.py
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from flare.study.report import load_results, paired_difference
from flare.study.stats import seed_stat

RESULTS = Path(__file__).parent / "results"
LORA = "translate-train (LoRA)"
SETTINGS = {  # name -> (layers fused of e5-small's 0-11, folder)
    "all 12": ("0-11", "nusax-cache"),
    "lower half": ("0-5", "nusax-fuse-0-5"),
    "upper half": ("6-11", "nusax-fuse-6-11"),
    "every other": ("0,2,...,10", "nusax-fuse-0_2_4_6_8_10"),
    "first only": ("0", "nusax-fuse-0"),
}


def _flare(records: list[dict]) -> list[dict]:
    return [r for r in records if r["method"] == "flare" and r.get("test_english") in (None, "gold")]


def row(name: str, layers: str, lora: list[dict], flare: list[dict]) -> dict | None:
    """The setting's row, over the (language, seed) pairs both LoRA and this setting have."""
    pairs = {(r["language"], r["seed"]) for r in lora} & {(r["language"], r["seed"]) for r in flare}
    if not pairs:
        return None
    languages = sorted({lang for lang, _ in pairs})
    seeds = sorted(s for s in {s for _, s in pairs} if all((lang, s) in pairs for lang in languages))
    if not seeds:
        return None
    keep = {(lang, s) for lang in languages for s in seeds}
    lora = [r for r in lora if (r["language"], r["seed"]) in keep]
    flare = [{**r, "label": name} for r in flare if (r["language"], r["seed"]) in keep]
    per_seed = [math.fsum(r["score"] for r in flare if r["seed"] == s) / len(languages) for s in seeds]
    difference = paired_difference(lora + flare, name, LORA, lora[0]["task"])
    seconds = math.fsum(r["wall_time_s"] for r in flare)
    lora_seconds = math.fsum(r["wall_time_s"] for r in lora)
    return {"name": name, "layers": layers, "languages": languages, "seeds": seeds, "f1": seed_stat(per_seed),
            "delta": difference, "seconds": seconds, "lora_seconds": lora_seconds, "ratio": seconds / lora_seconds,
            "lora_f1": seed_stat([math.fsum(r["score"] for r in lora if r["seed"] == s) / len(languages)
                                  for s in seeds])}


def markdown(rows: list[dict]) -> str:
    lines = ["| fused layers | layers | languages x seeds | macro-F1 | FLARE − LoRA | 95% CI | FLARE wall time (s) "
             "| LoRA wall time (s) | FLARE / LoRA |", "|---|---|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        ci = r["delta"]["ci95"]
        interval = f"[{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "–"
        lines.append(f"| {r['name']} | {r['layers']} | {len(r['languages'])} x {len(r['seeds'])} | {r['f1'].format()} "
                     f"| {r['delta']['mean']:+.1f} | {interval} | {r['seconds']:,.0f} | {r['lora_seconds']:,.0f} "
                     f"| {r['ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(6, 4))
    lora = rows[0]["lora_f1"].mean
    axes.scatter([1.0], [lora], color="grey")
    axes.annotate("LoRA", (1.0, lora), textcoords="offset points", xytext=(5, 5))
    for r in rows:
        axes.errorbar([r["ratio"]], [r["f1"].mean], yerr=[r["f1"].std or 0], fmt="o")
        axes.annotate(f"{r['name']} ({r['layers']})", (r["ratio"], r["f1"].mean), textcoords="offset points",
                      xytext=(5, -12))
    axes.set_xlabel("wall time of the study's runs / LoRA's")
    axes.set_ylabel("macro-F1, mean over languages (sd over seeds)")
    axes.set_title("NusaX, e5-small: fusing fewer layers")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder holding the study folders")
    parser.add_argument("--out", type=Path, default=RESULTS / "nusax-fuse-layers")
    args = parser.parse_args()
    base = load_results(args.results / SETTINGS["all 12"][1] / "results.jsonl")
    lora = [r for r in base if r["method"] == "translate-train"]
    rows = []
    for name, (layers, folder) in SETTINGS.items():
        path = args.results / folder / "results.jsonl"
        if path.is_file() and (found := row(name, layers, lora, _flare(load_results(path)))):
            rows.append(found)
        else:
            print(f"{name}: no runs paired with LoRA in {path}")
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (args.out / "fuse_layers.md").write_text(table, encoding="utf-8")
    plot(rows, args.out / "fuse_layers.png")
    print(table)


if __name__ == "__main__":
    main()
