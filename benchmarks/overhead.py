"""Training-step cost of FLARE against plain LoRA and input-level fusion, measured in one run.

    .venv/bin/python benchmarks/overhead.py            # the table in BENCHMARKS.md
    .venv/bin/python benchmarks/overhead.py --layers 2 --steps 2   # a quick look

A random Llama (no download) with LoRA on all linear layers (r 8, alpha 16), AdamW, fp32 on CPU:
- lora: translate-train LoRA on the target sequence (length L);
- flare: the same plus the English side (length L), fused in q_proj/v_proj (add_relu);
- flare_cached: FLARE with its English states served by an EnglishStateCache, filled in the
  warm-up step (as in a study's later epochs): the rows hashed, the states assembled, no English
  pass; its floor is LoRA itself;
- input_fusion: plain LoRA on English and target concatenated (length 2L);
- floor: what FLARE cannot avoid, measured the same way: a LoRA step plus one no-grad forward of
  the English side through the frozen base (adapters off, eval mode), stopped at the input of the
  last fused module. FLARE's own cost above this row is the fusion itself and its bookkeeping.
Each method runs in its own process so peak memory is its own; rounds alternate the methods so
drift of the machine affects all of them alike. Peak memory is the highest resident set size
sampled during the steps, minus the resident size before the first step (model and optimizer
state excluded); the total peak is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

METHODS = ("lora", "floor", "flare", "flare_cached", "input_fusion")
FLOORS = {"flare": "floor", "flare_cached": "lora"}  # what each FLARE row cannot go below


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_one(args: argparse.Namespace) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from flare import EnglishStateCache, FlareConfig, get_flare_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                         num_key_value_heads=args.hidden // 64)
    model = get_flare_model(
        LlamaForCausalLM(config), FlareConfig(target_modules="all-linear", fusion="add_relu")
    ).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(0, args.vocab, (args.batch, args.length), generator=generator)
    english = torch.randint(0, args.vocab, (args.batch, args.length), generator=generator)
    if args.method == "input_fusion":
        inputs = {"input_ids": torch.cat([english, target], 1)}
    elif args.method in ("flare", "flare_cached"):
        inputs = {"input_ids": target, "source_input_ids": english}
        if args.method == "flare_cached":
            model.english_state_cache = EnglishStateCache(args.length, args.batch, ram_bytes=1 << 34)
    else:
        inputs = {"input_ids": target}
    labels = inputs["input_ids"]

    class Reached(Exception):
        pass

    def stop(*_):
        raise Reached

    last_fused = dict(model.backbone.named_modules())[model.fused_modules[-1]]

    def english_pass() -> None:  # the floor's extra work: FLARE's English pass, nothing else
        handle = last_fused.register_forward_pre_hook(stop)
        model.eval()
        try:
            with torch.no_grad(), model.peft_model.disable_adapter():
                model.backbone(input_ids=english, use_cache=False)
        except Reached:
            pass
        finally:
            handle.remove()
            model.train()

    def step() -> None:
        if args.method == "floor":
            english_pass()
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocator pools, optimizer state
    baseline = _rss_bytes()
    peak = [baseline]
    running = [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    running[0] = False
    sampler.join()
    return {
        "method": args.method, "times": times,
        "step_peak_mb": (peak[0] - baseline) / 2**20, "total_peak_mb": peak[0] / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per method and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.method:
        print(json.dumps(run_one(args)))
        return

    results = {m: {"times": [], "step_peak_mb": [], "total_peak_mb": []} for m in METHODS}
    forwarded = [a for a in sys.argv[1:]]
    for round_index in range(args.rounds):
        for method in METHODS:
            out = subprocess.run([sys.executable, __file__, *forwarded, "--method", method],
                                 check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results[method]["times"] += result["times"]
            results[method]["step_peak_mb"].append(result["step_peak_mb"])
            results[method]["total_peak_mb"].append(result["total_peak_mb"])
            print(
                f"round {round_index + 1}: {method} median {statistics.median(result['times']):.3f} s", file=sys.stderr
            )

    base_time = statistics.median(results["lora"]["times"])
    base_mem = max(results["lora"]["step_peak_mb"])
    print(f"Llama {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, batch {args.batch}, "
          f"length {args.length}, {args.threads} threads; median of {args.steps * args.rounds} steps per method")
    print("| method | step time (s) | time vs LoRA | its floor vs LoRA | step peak memory (MB) | memory vs LoRA "
          "| total peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for method in METHODS:
        t = statistics.median(results[method]["times"])
        mem = max(results[method]["step_peak_mb"])
        total = max(results[method]["total_peak_mb"])
        floor = f"{statistics.median(results[FLOORS[method]]['times']) / base_time:.2f}x" if method in FLOORS else "-"
        print(f"| {method} | {t:.3f} | {t / base_time:.2f}x | {floor} | {mem:.0f} | {mem / base_mem:.2f}x "
              f"| {total:.0f} |")


if __name__ == "__main__":
    main()
