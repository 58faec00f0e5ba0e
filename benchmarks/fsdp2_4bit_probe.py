"""Does FSDP2 shard a bitsandbytes 4-bit base correctly? (the reason flare-xlt refuses load_in_4bit
under an FSDP launch). A tiny random Llama is saved, loaded in NF4 (uint8 and bfloat16 quant
storage), wrapped in a FlareModel, and the loss of one fixed batch is computed unsharded and with
every layer under fully_shard; the two should agree.

    python -m torch.distributed.run --nproc_per_node 2 benchmarks/fsdp2_4bit_probe.py /tmp/flare-4bit-probe
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from flare import FlareConfig, get_flare_model
from tiny_models import llama


def loss_of(folder: Path, storage: torch.dtype | None, mesh=None) -> float:
    """storage None: the control, a bfloat16 base without quantisation."""
    if storage is None:
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, device_map="cpu")
    else:
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=storage)
        base = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quantization, device_map="cpu")
    torch.manual_seed(0)
    model = get_flare_model(base, FlareConfig(task_type="CAUSAL_LM"))
    if mesh is not None:
        for layer in model.backbone.model.layers:  # flare.shard_flare_model refuses 4-bit weights
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    generator = torch.Generator().manual_seed(1)
    ids, source = torch.randint(2, 97, (2, 10), generator=generator), torch.randint(2, 97, (2, 12), generator=generator)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return float(model(input_ids=ids, labels=ids, source_input_ids=source,
                           source_attention_mask=torch.ones_like(source)).loss)


def main(folder: str) -> None:
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    if dist.get_rank() == 0:
        llama(hidden_size=64, intermediate_size=128).save_pretrained(folder)
    dist.barrier()
    for storage in (None, torch.uint8, torch.bfloat16):
        one = loss_of(Path(folder), storage)
        sharded = loss_of(Path(folder), storage, mesh)
        if dist.get_rank() == 0:
            name = "bfloat16 base (control)" if storage is None else f"NF4, quant_storage {storage}"
            print(f"{name}: one process {one:.6f}, fully_shard {sharded:.6f}, "
                  f"difference {abs(one - sharded):.2e}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
