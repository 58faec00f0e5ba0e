"""Sentences per second of the translate step (flare.mt.translate.translate_dataset) on CPU.

Uses the tiny random NLLB-style model of tests/tiny_mt.py (no download), so the number measures
the pipeline around the model (tokenisation, batching, generate, SQLite cache, output files) rather
than a real NLLB. A second, fully cached run shows the cost of a rerun.

Command (from the repository root):
    .venv/bin/python benchmarks/translate_speed.py --rows 400 --batch-size 32 --threads 2
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("FLARE_DATA_DIR", ROOT.parent / "shared" / "data")))
    parser.add_argument("--rows", type=int, default=400, help="NusaX Javanese test rows to translate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 1.5 x input + 10")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from tiny_mt import build_tiny_nllb

    from flare.mt.translate import translate_dataset

    torch.set_num_threads(args.threads)
    with open(args.data_dir / "nusax-senti" / "jav" / "test.csv", encoding="utf-8") as handle:
        rows = [{"id": row["id"], "text": row["text"]} for row in csv.DictReader(handle)][: args.rows]
    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_tiny_nllb(Path(tmp) / "model", args.data_dir))
        options = dict(model=model, src_lang="jav", tgt_lang="en", task="nusax", split="test",
                       translations_dir=Path(tmp) / "out", batch_size=args.batch_size,
                       num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, device="cpu", show_progress=False)
        started = time.perf_counter()
        first = translate_dataset(rows, **options)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        translate_dataset(rows, **options)
        warm = time.perf_counter() - started
    translated = first.meta["counts"]["translated"]
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"rows={len(rows)} unique_texts={translated} batch_size={args.batch_size} "
          f"num_beams={args.num_beams} max_new_tokens={args.max_new_tokens} threads={args.threads} "
          "model=tiny random M2M100 (d_model 32)")
    print(f"translate (cold, includes model load): {translated / cold:.1f} sentences/s ({cold:.2f} s)")
    print(f"rerun (all from cache, no model load): {len(rows) / warm:.1f} sentences/s ({warm:.3f} s)")


if __name__ == "__main__":
    main()
