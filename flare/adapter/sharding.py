"""FLARE under FSDP2 (torch.distributed.fsdp.fully_shard): sharding, gathering, saving.

Under FSDP2 a parameter is a DTensor shard, gathered only inside the forward (and backward) of
the fully_shard unit that owns it. FLARE fits that contract without changes as long as every
decoder or encoder layer is its own unit and the FlareModel is the root unit:
- the fusion is a forward hook on lora_A, which runs inside the owning layer's forward, so A is
  whole when it projects the recorded English inputs;
- the English pass runs inside the root's forward under no_grad (capture.py), so it leaves no
  autograd state for FSDP's backward hooks to miss;
- the fusion modules, the projection and the English gates live in the root unit, which is
  gathered for the whole forward.
Saving gathers the adapter's tensors on every process (a collective) and writes them on one.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from flare.errors import FlareError

# State dict entries that belong to the adapter (PEFT's LoRA, heads it trains, FLARE's own modules)
_ADAPTER_MARKERS = ("lora_", "modules_to_save.", "trainable_tokens_", "fusion_modules.", "source_projection.",
                    "english_gates.")


def is_sharded(model: nn.Module) -> bool:
    """Whether fully_shard has turned the model's parameters into DTensor shards."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def wait_for_everyone() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def layer_classes(model: nn.Module) -> list[str]:
    """The transformer layer classes a model declares it keeps whole (transformers'
    _no_split_modules, the same default accelerate's auto-wrap uses)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    return sorted(names)


def shard_flare_model(
    model: nn.Module, mesh=None, layers: Iterable[str] | None = None, reshard_after_forward: bool = True,
    mp_policy=None,
) -> nn.Module:
    """Shard a FlareModel (or any PEFT model) in place with FSDP2: each transformer layer (by
    class name; default: the model's _no_split_modules) is one unit, the model itself the root.

    Args:
        mesh: the 1-D device mesh; default init_device_mesh of the model's device type over all
            processes (give it explicitly on CPU: gloo with a "cpu" mesh).
        layers: class names of the layers to wrap.
        mp_policy: a torch.distributed.fsdp.MixedPrecisionPolicy (default: compute in each
            parameter's own dtype).
    """
    quantized = [name for name, p in model.named_parameters() if type(p).__name__ == "Params4bit"]
    if quantized:
        # measured: fully_shard over NF4 weights runs but computes another loss (benchmarks/fsdp2_4bit_probe.py)
        raise FlareError("a 4-bit (bitsandbytes) base cannot be sharded with FSDP2: its sharded weights compute wrong "
                         "outputs; use a bfloat16 base or one process")
    if len(getattr(model, "english_gates", ())):
        raise FlareError("english_gate cannot be sharded with FSDP2 (fully_shard refuses its scalar gates); "
                         "train it in one process or with DDP")
    if not (dist.is_available() and dist.is_initialized()):
        raise FlareError("FSDP2 needs an initialised process group (launch with torchrun or accelerate launch)")
    names = set(layers if layers is not None else layer_classes(model))
    units = [m for m in model.modules() if type(m).__name__ in names]
    if not units:
        raise FlareError(f"no layer of class {sorted(names)} in {type(model).__name__}; nothing to shard per layer")
    if mesh is None:
        device = next(model.parameters()).device
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    kwargs = {"mesh": mesh, "reshard_after_forward": reshard_after_forward,
              "mp_policy": mp_policy or MixedPrecisionPolicy()}
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    return model


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a DTensor shard (a collective: every process must call it), as is otherwise."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def copy_full_into(parameter: torch.Tensor, value: torch.Tensor) -> None:
    """Copy a whole tensor into a parameter, sharding it first when the parameter is a shard."""
    with torch.no_grad():
        if isinstance(parameter, DTensor):
            value = distribute_tensor(
                value.to(device=parameter.device, dtype=parameter.dtype), parameter.device_mesh, parameter.placements
            )
        parameter.copy_(value)


def gathered_adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's entries of the model's state dict as whole CPU tensors, on every process
    (a collective). The frozen base is never gathered."""
    return {
        key: full_tensor(value).detach().cpu().contiguous()
        for key, value in model.state_dict().items()
        if any(marker in key for marker in _ADAPTER_MARKERS)
    }
