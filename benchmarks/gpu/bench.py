"""FLARE against LoRA on one GPU at Llama-3.1-8B shapes, random weights (no download).

    python benchmarks/gpu/bench.py --out DIR           # the 8B shapes (benchmarks/gpu/validate.sh)
    python benchmarks/gpu/bench.py --tiny --out DIR    # a dry run with tiny shapes, CPU is fine

For each base, bf16 and 4-bit (NF4, double quantisation, bf16 compute, quantised in place from
the random bf16 weights), the same FlareModel (LoRA r 16 on all linear layers, add_relu fused in
q_proj/v_proj) is measured as
- lora: a training step without an English side, which is exactly PEFT LoRA;
- flare: the same step with the English side (as long as the target);
- flare cached: the same step with the English states served by an EnglishStateCache (filled in
  the warm-up steps, as after a study's first epoch): hashing the rows, assembling the states,
  the fusion, no English pass;
- floor: one no-grad forward of the base, adapters off, stopped at the last fused module's input,
  which is all the English pass should cost;
with gradient checkpointing off and on: median step time and peak GPU memory (the whole peak,
and above what was allocated before the step: weights, adapter, AdamW state). Then generation:
prefill of the prompt and greedy new tokens, tokens/s, for lora and flare (the English prompt
runs once, at prefill). Every row is written to DIR/gpu_bench.json as soon as it is measured and
the table to DIR/gpu_bench.md at the end; a row that runs out of memory or time says so.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import sys
import time
from contextlib import suppress
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from flare import EnglishStateCache, FlareConfig, get_flare_model
from flare.hf.device import autocast, resolve_device

EIGHT_B = dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256, seq=512, batch=4,
               new_tokens=64)
TINY = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=256, seq=16, batch=2, new_tokens=4)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes for a dry run (any size option overrides)")
    for name, value in EIGHT_B.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {value}")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="measured training steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="training steps before measuring")
    parser.add_argument("--repeats", type=int, default=3, help="measured generations / floor passes per row")
    parser.add_argument("--modes", nargs="+", default=["bf16", "4bit"], choices=["bf16", "4bit"])
    parser.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu (flare/hf/device.py)")
    parser.add_argument("--budget-s", type=float, default=0, help="start no new row after this many seconds (0: none)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    for name, value in (TINY if args.tiny else EIGHT_B).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


class Clock:
    """Wall time of a block, with the device's queue drained on both sides."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Clock:
        self.sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.sync()
        self.seconds = time.perf_counter() - self.start


def memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"allocated_gib": torch.cuda.memory_allocated(device) / 2**30,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}


def reset_peak(device: torch.device) -> float:
    if device.type != "cuda":
        return 0.0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device) / 2**30


def build_base(args: argparse.Namespace, mode: str, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(4096, args.seq + args.new_tokens), bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(0)
    with torch.device(device):  # random weights made where they live: no 16 GB host copy
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if mode == "4bit":
        quantize_in_place(model, device)
    return model


def quantize_in_place(model: torch.nn.Module, device: torch.device) -> None:
    """Every linear layer of the decoder (not the LM head, as transformers' 4-bit loading keeps it)
    becomes bitsandbytes NF4 with double quantisation and bf16 compute, one layer at a time so the
    bf16 copy never exists twice."""
    import bitsandbytes as bnb

    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                                      device="meta")
            weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                       quant_type="nf4")
            layer.weight = weight.to(device)  # quantises
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, layer)
            del child, weight


def inputs(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(3, args.vocab, (args.batch, args.seq), generator=generator)
    english = torch.randint(3, args.vocab, (args.batch, args.seq), generator=generator)
    mask = torch.ones_like(target)
    return {name: tensor.to(device) for name, tensor in
            dict(target=target, english=english, mask=mask).items()}


def timed(run, repeats: int, device: torch.device) -> tuple[list[float], float, object]:
    """`run` timed `repeats` times after the peak-memory counter is reset: (seconds of each call,
    GiB in use before the first, the last call's result)."""
    before = reset_peak(device)
    times, result = [], None
    for _ in range(repeats):
        with Clock(device) as clock:
            result = run()
        times.append(clock.seconds)
    return times, before, result


def step_row(times: list[float], before: float, device: torch.device) -> dict:
    """A row of step times and peak memory (read now, before anything is freed)."""
    used = memory(device)
    row = {"step_s": statistics.median(times), "step_s_all": times, "before_step_gib": before, **used}
    if used:
        row["step_peak_above_gib"] = used["peak_gib"] - before
    return row


def train_row(model, data, args, device, method: str) -> dict:
    """Median step time and peak memory of `method`'s training steps (AdamW, bf16 autocast)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    fused = method in ("flare", "flare cached")
    source = {"source_input_ids": data["english"], "source_attention_mask": data["mask"]} if fused else {}
    if method == "flare cached":
        # every English pass in one canonical layout, kept in host memory (flare/adapter/english_cache.py)
        model.english_state_cache = EnglishStateCache(args.seq, args.batch, ram_bytes=1 << 36)
    model.train()

    def step() -> None:
        with autocast(device, torch.bfloat16):
            loss = model(input_ids=data["target"], attention_mask=data["mask"], labels=data["target"], **source).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):  # the first step also creates AdamW's state
        step()
    times, before, _ = timed(step, args.steps, device)
    row = step_row(times, before, device)
    optimizer.state.clear()  # AdamW's moments go before the next row measures its own
    if method == "flare cached":
        cache, model.english_state_cache = model.english_state_cache, None
        row["cache_bytes"] = cache.stats.ram_bytes
        row["cache_hits"], row["cache_computed"] = cache.stats.hits, cache.stats.computed
    return row


def floor_row(model, data, args, device) -> dict:
    """One no-grad forward of the frozen base, adapters off, up to the last fused module's input."""

    class Reached(Exception):
        pass

    def stop(module, args_, kwargs):
        raise Reached

    last = dict(model.backbone.named_modules())[model.fused_modules[-1]]
    handle = last.register_forward_pre_hook(stop, with_kwargs=True)
    model.eval()

    def forward() -> None:
        with torch.no_grad(), model.peft_model.disable_adapter(), autocast(device, torch.bfloat16), suppress(Reached):
            model.backbone(input_ids=data["english"], attention_mask=data["mask"], use_cache=False)

    try:
        forward()
        times, before, _ = timed(forward, args.repeats, device)
    finally:
        handle.remove()
    return step_row(times, before, device)


def generation_row(model, data, args, device, method: str) -> dict:
    """Greedy generation of args.new_tokens after the prompt: new tokens per second (whole batch)."""
    source = {"source_input_ids": data["english"], "source_attention_mask": data["mask"]} if method == "flare" else {}
    model.eval()

    def generate(new_tokens: int) -> torch.Tensor:
        with torch.no_grad(), autocast(device, torch.bfloat16):
            return model.generate(input_ids=data["target"], attention_mask=data["mask"], max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, **source)

    generate(2)
    times, before, out = timed(lambda: generate(args.new_tokens), args.repeats, device)
    assert out.shape[1] == args.seq + args.new_tokens, out.shape
    seconds = statistics.median(times)
    row = {"generate_s": seconds, "generate_s_all": times, "tokens_per_s": args.batch * args.new_tokens / seconds,
           "before_step_gib": before, **memory(device)}
    return row


def environment(device: torch.device) -> dict:
    import peft
    import transformers

    info = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "device": str(device),
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        info["bitsandbytes"] = None
    return info


def run(args: argparse.Namespace) -> list[dict]:
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    shapes = {k: getattr(args, k) for k in EIGHT_B} | {"r": args.r}
    report = {"environment": environment(device), "shapes": shapes, "rows": []}
    started = time.perf_counter()
    data = inputs(args, device)

    def record(mode: str, checkpointing: str | None, what: str, measure) -> None:
        row = {"mode": mode, "checkpointing": checkpointing, "what": what}
        if args.budget_s and time.perf_counter() - started > args.budget_s:
            row["error"] = "skipped: time budget spent"
        else:
            try:
                row |= measure()
            except torch.cuda.OutOfMemoryError:
                row["error"] = "out of GPU memory"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        (args.out / "gpu_bench.json").write_text(json.dumps(report, indent=2))

    def measure(mode: str) -> None:
        """Every row of one base; the base is freed when this returns."""
        model = get_flare_model(
            build_base(args, mode, device),
            FlareConfig(r=args.r, lora_alpha=2 * args.r, target_modules="all-linear", fusion="add_relu"),
        )
        for checkpointing in args.checkpointing:
            if checkpointing == "on":
                model.gradient_checkpointing_enable()
            else:
                model.backbone.gradient_checkpointing_disable()
            for method in ("lora", "flare", "flare cached"):
                record(mode, checkpointing, method, lambda m=method: train_row(model, data, args, device, m))
        model.backbone.gradient_checkpointing_disable()  # inference: nothing to recompute, and the cache stays on
        record(mode, None, "floor", lambda: floor_row(model, data, args, device))
        for method in ("lora", "flare"):
            record(mode, None, f"generate {method}", lambda m=method: generation_row(model, data, args, device, m))

    for mode in args.modes:
        if args.budget_s and time.perf_counter() - started > args.budget_s:
            record(mode, None, "base", dict)
            continue
        measure(mode)
        gc.collect()  # the adapter's hooks hold the model in a reference cycle: free its weights now
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["seconds"] = time.perf_counter() - started
    (args.out / "gpu_bench.json").write_text(json.dumps(report, indent=2))
    (args.out / "gpu_bench.md").write_text(markdown(report))
    return report["rows"]


def markdown(report: dict) -> str:
    """The step table (time and memory against LoRA of the same mode and checkpointing) and the
    generation table."""
    env, shapes = report["environment"], report["shapes"]
    rows = report["rows"]

    def find(mode, checkpointing, what):
        return next((r for r in rows if (r["mode"], r["checkpointing"], r["what"]) == (mode, checkpointing, what)), {})

    def gib(value):
        return f"{value:.1f}" if value is not None else "-"

    lines = [
        f"GPU benchmark: {env.get('gpu', env['device'])}, {env['date']}; torch {env['torch']}, "
        f"transformers {env['transformers']}, peft {env['peft']}, bitsandbytes {env['bitsandbytes']}.",
        f"Random Llama: hidden {shapes['hidden']}, {shapes['layers']} layers, {shapes['heads']} heads "
        f"({shapes['kv_heads']} KV), intermediate {shapes['intermediate']}, vocab {shapes['vocab']}; "
        f"batch {shapes['batch']} x {shapes['seq']} tokens, LoRA r {shapes['r']} on all linear layers, add_relu.",
        "",
        "| base | grad. ckpt | what | step s | x LoRA | peak GiB | x LoRA | above weights GiB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["what"] not in ("lora", "flare", "flare cached", "floor"):
            continue
        if "error" in row:
            lines.append(f"| {row['mode']} | {row['checkpointing'] or '-'} | {row['what']} | {row['error']} |||||")
            continue
        lora = find(row["mode"], row["checkpointing"] or "off", "lora")
        time_ratio = row["step_s"] / lora["step_s"] if lora.get("step_s") else None
        peak_ratio = row["peak_gib"] / lora["peak_gib"] if lora.get("peak_gib") and "peak_gib" in row else None
        lines.append(
            f"| {row['mode']} | {row['checkpointing'] or '-'} | {row['what']} | {row['step_s']:.3f} | "
            f"{f'{time_ratio:.2f}' if time_ratio else '-'} | {gib(row.get('peak_gib'))} | "
            f"{f'{peak_ratio:.2f}' if peak_ratio else '-'} | {gib(row.get('step_peak_above_gib'))} |"
        )
    lines += ["", f"Generation: prefill {shapes['seq']} tokens, {shapes['new_tokens']} new tokens, greedy, "
              f"batch {shapes['batch']}.", "",
              "| base | method | new tokens/s | x LoRA | peak GiB |", "|---|---|---:|---:|---:|"]
    for row in rows:
        if not row["what"].startswith("generate"):
            continue
        method = row["what"].split()[1]
        if "error" in row:
            lines.append(f"| {row['mode']} | {method} | {row['error']} |||")
            continue
        lora = find(row["mode"], None, "generate lora")
        ratio = row["tokens_per_s"] / lora["tokens_per_s"] if lora.get("tokens_per_s") else None
        lines.append(f"| {row['mode']} | {method} | {row['tokens_per_s']:.1f} | "
                     f"{f'{ratio:.2f}' if ratio else '-'} | {gib(row.get('peak_gib'))} |")
    lines += ["", f"Total {report['seconds']:.0f} s. Command: `python benchmarks/gpu/bench.py` (see its docstring)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run(parse())
