"""What the English-state cache (issue 36, `data.english_cache`) takes per 1,000 examples.

    .venv/bin/python benchmarks/english_cache_size.py                         # NusaX jav, multilingual-e5-small
    .venv/bin/python benchmarks/english_cache_size.py --task xnli --language de --max-length 128 --splits dev,test
    .venv/bin/python benchmarks/english_cache_size.py --fuse-layers 0-5        # the lower half only

The base model (no head training is needed: the English pass runs with adapters off) gets the
study's adapter (q/v fused); the first --examples pairs of the language (train, then validation,
then test, as a run caches them) are formatted as a study formats them. Their real English tokens
times the bytes the English pass records per token is what the cache keeps in memory: exact and
deterministic. The first --fill of them are served through an EnglishStateCache twice, kept in
memory and spilled to safetensors shards, which checks that count (the script fails otherwise)
and measures the shards' size, scaled to 1,000 examples. The seconds are wall time on whatever
else the machine is doing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from flare.adapter.english_cache import EnglishStateCache, backbone_fingerprint
from flare.data.tasks import get_task
from flare.hf.formats import FormatSettings, PairFormatter
from flare.hf.loading import adapt, flare_config, load_backbone
from flare.study.english_cache import english_state_bytes
from flare.study.settings import AdapterSettings


def fill(model, formatter, items, cache: EnglishStateCache, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        features = formatter.collate(formatter.features(items[i:i + batch], train=False))
        cache.states(model, features["source_input_ids"], features["source_attention_mask"], {})
    cache.flush()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="nusax")
    parser.add_argument("--language", default="jav")
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--fill", type=int, default=64, help="examples actually cached (in memory and spilled)")
    parser.add_argument("--batch", type=int, default=16, help="the canonical rows (stage2.batch_size)")
    parser.add_argument("--fuse-layers", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--splits", default="train,valid,test", help="read in this order (XNLI: dev,test)")
    args = parser.parse_args()

    task = get_task(args.task)
    items = []
    for split in args.splits.split(","):
        if len(items) < args.examples:
            items += task.load_pairs(split, args.language, args.data_dir, None, "gold")
    items = items[:args.examples]
    backbone, tokenizer, family = load_backbone(args.model, task, seed=0, device="cpu", dtype="float32")
    adapter = AdapterSettings(r=8, lora_alpha=16, target_modules=["query", "value"], fuse_layers=args.fuse_layers)
    model = adapt(backbone, flare_config(adapter.flare_kwargs(), task, family)).eval()
    formatter = PairFormatter(task, tokenizer, family, "flare", FormatSettings(max_length=args.max_length))
    needed, per_token = english_state_bytes(model, formatter, items)
    filled = items[:args.fill]
    filled_bytes, _ = english_state_bytes(model, formatter, filled)
    start = time.perf_counter()
    backbone_fingerprint(model)
    fingerprint_s = time.perf_counter() - start

    memory = EnglishStateCache(formatter.max_length, args.batch, ram_bytes=1 << 40)
    memory_s = fill(model, formatter, filled, memory, args.batch)
    with tempfile.TemporaryDirectory() as folder:
        disk = EnglishStateCache(formatter.max_length, args.batch, 0, 1 << 40, Path(folder))
        disk_s = fill(model, formatter, filled, disk, args.batch)
        on_disk = sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
    assert memory.stats.ram_bytes == filled_bytes, (memory.stats.ram_bytes, filled_bytes)  # the estimate is exact
    print(f"{args.task} {args.language}, {args.model}, max_length {args.max_length}, fused modules "
          f"{len(model.fused_modules)} (fuse_layers {args.fuse_layers or 'all'}), {len(items)} examples "
          f"({len(filled)} cached)")
    print("| English tokens per example | bytes per token | RAM per 1,000 examples | disk per 1,000 examples "
          "(scaled) | fill of the cached ones (s, in RAM / spilled) | fingerprint (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    tokens = needed // per_token
    print(f"| {tokens / len(items):.1f} | {per_token:,} | {needed * 1000 / len(items) / 2**20:,.1f} MiB | "
          f"{on_disk / filled_bytes * needed * 1000 / len(items) / 2**20:,.1f} MiB | {memory_s:.1f} / {disk_s:.1f} "
          f"| {fingerprint_s:.2f} |")


if __name__ == "__main__":
    main()
