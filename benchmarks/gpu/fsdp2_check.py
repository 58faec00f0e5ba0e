"""FSDP2 against DDP on two or more GPUs: step time and per-GPU peak memory of FLARE training
(flare.study.training.fit, as `flare compare` runs it) on a random Llama-shaped model.

Launched by validate.sh, once per mode, e.g.
    accelerate launch --multi_gpu --num_processes 2 --mixed_precision bf16 benchmarks/gpu/fsdp2_check.py ddp OUT
    accelerate launch --config_file examples/accelerate/fsdp2.yaml --num_processes 2 \
        benchmarks/gpu/fsdp2_check.py fsdp2 OUT
Each writes OUT/fsdp2_check_<mode>.json: seconds per optimizer step (second epoch, warm), each
GPU's peak allocated memory, the final per-step losses (the two modes should agree).
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM

from flare import FlareConfig, get_flare_model
from flare.adapter.sharding import is_sharded
from flare.hf.device import process_index
from flare.study.settings import StageSettings
from flare.study.training import fit

# Llama-3.1-8B's layer shapes, 8 of its 32 layers (about 1.9 B parameters in bfloat16)
SHAPES = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=8,
              num_attention_heads=32, num_key_value_heads=8)
ITEMS, BATCH, LENGTH, EPOCHS = 64, 8, 256, 2


def main(mode: str, out: str) -> None:
    device = torch.device("cuda", process_index())
    torch.cuda.set_device(device)
    torch.manual_seed(0)
    with torch.device(device):
        base = LlamaForCausalLM(LlamaConfig(**SHAPES)).to(torch.bfloat16)
    model = get_flare_model(base, FlareConfig(task_type="CAUSAL_LM", r=16))
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, SHAPES["vocab_size"], (ITEMS, LENGTH), generator=generator)
    source = torch.randint(2, SHAPES["vocab_size"], (ITEMS, LENGTH), generator=generator)

    def collate(rows):
        return {"input_ids": ids[rows].to(device), "labels": ids[rows].to(device),
                "source_input_ids": source[rows].to(device)}

    settings = StageSettings(epochs=EPOCHS, batch_size=BATCH, learning_rate=1e-4, tensorboard=False,
                             gradient_checkpointing=True)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(model, list(range(ITEMS)), collate, settings, seed=3, run_dir=Path(run_dir))
    elapsed = time.perf_counter() - start
    peak = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**30], device=device)
    peaks = [torch.zeros_like(peak) for _ in range(dist.get_world_size())]
    dist.all_gather(peaks, peak)
    if dist.get_rank() == 0:
        warm = result.history[-1]
        record = {"mode": mode, "sharded": is_sharded(model), "processes": dist.get_world_size(),
                  "gpu": torch.cuda.get_device_name(device), "seconds_per_step_warm": warm["seconds"] * EPOCHS
                  / max(result.steps, 1), "total_seconds": round(elapsed, 2), "steps": result.steps,
                  "peak_gib_per_gpu": [round(float(p), 2) for p in peaks], "losses": result.step_losses}
        Path(out, f"fsdp2_check_{mode}.json").write_text(json.dumps(record, indent=2))
        print(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
