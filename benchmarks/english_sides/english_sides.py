"""How close each English side (flare.mt.english_side) is to the gold English: chrF and BLEU per
language on a NusaX split, the x axis for "FLARE's margin over LoRA against the English side's
chrF" (issue 18). Seeded variants (shuffled, noise) use the study's seed numbering.

Command (from the repository root):
    FLARE_DATA_DIR=../shared/data .venv/bin/python benchmarks/english_sides/english_sides.py \
        --languages ace bbc jav nij sun
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flare.data.tasks import get_task  # noqa: E402
from flare.mt.english_side import ENGLISH_SIDES, english_side  # noqa: E402
from flare.mt.translate import translation_quality  # noqa: E402


def side_quality(language: str, sides: list[str], split: str, seed: int, data_dir: str | None) -> dict[str, dict]:
    """{side: {"bleu", "chrf"}} of each English side of one language against the gold English."""
    pairs = get_task("nusax").load_pairs(split, language, data_dir, source="gold")
    references = [p.source.fields["text"] for p in pairs]
    scores = {}
    for side in sides:
        varied = english_side(side, pairs, seed, language=language, data_dir=data_dir)
        scores[side] = translation_quality([p.source.fields["text"] for p in varied], references, "en")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", nargs="+", default=["ace", "bbc", "jav", "nij", "sun"])
    parser.add_argument("--sides", nargs="+", default=list(ENGLISH_SIDES), choices=ENGLISH_SIDES)
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", default=None, help="datasets folder (default: $FLARE_DATA_DIR)")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args()
    table = {lang: side_quality(lang, args.sides, args.split, args.seed, args.data_dir) for lang in args.languages}
    print(f"chrF (BLEU) against the gold English, NusaX {args.split}, seed {args.seed}\n")
    print("| English side | " + " | ".join(args.languages) + " | avg |")
    print("|---|" + "---:|" * (len(args.languages) + 1))
    for side in args.sides:
        cells = [table[lang][side] for lang in args.languages]
        avg = sum(c["chrf"] for c in cells) / len(cells)
        print(f"| {side} | " + " | ".join(f"{c['chrf']:.1f} ({c['bleu']:.1f})" for c in cells) + f" | {avg:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
