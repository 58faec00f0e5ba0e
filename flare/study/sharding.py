"""Training sharded with FSDP2, as an accelerate FSDP config asks
(`accelerate launch --config_file examples/accelerate/fsdp2.yaml ...`).

flare-xlt shards the model itself (flare.adapter.sharding) from the settings accelerate launch
puts in the environment, rather than through accelerate's own FSDP preparation: accelerate
prepares FSDP only on GPUs (on the CPU it silently falls back to DDP), so one code path, the one
tested with two CPU processes, runs everywhere, and the mesh is always given explicitly.
What the config asks and flare-xlt cannot honour is refused in one line before any work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from flare.errors import FlareError

_PRECISION = {"bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class ShardingPlan:
    """How to shard: the layer classes that become units (None: the model's own) and whether a
    unit frees its gathered weights after its forward (FULL_SHARD) or keeps them (SHARD_GRAD_OP)."""

    layers: tuple[str, ...] | None
    reshard_after_forward: bool


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "false").strip().lower() == "true"


def requested_sharding(env: Mapping[str, str] | None = None) -> ShardingPlan | None:
    """The FSDP2 plan of this process's launch config, or None when it asks for no FSDP."""
    env = os.environ if env is None else env
    if not _flag(env, "ACCELERATE_USE_FSDP"):
        return None
    version = env.get("FSDP_VERSION", "1").strip()
    if version != "2":
        raise FlareError(f"the accelerate config asks for FSDP version {version}; flare-xlt shards with FSDP2 only "
                         "(fsdp_version: 2, see examples/accelerate/fsdp2.yaml)")
    if _flag(env, "FSDP_OFFLOAD_PARAMS"):
        raise FlareError("fsdp_offload_params: true is not supported by flare-xlt's FSDP2 training; set it to false")
    if _flag(env, "FSDP_ACTIVATION_CHECKPOINTING"):
        raise FlareError("fsdp_activation_checkpointing: true is not supported; set it to false and use the study's "
                         "stage1/stage2 gradient_checkpointing: true (the fusion recomputes under it)")
    policy = env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP").strip().upper()
    if policy != "TRANSFORMER_BASED_WRAP":
        raise FlareError(f"fsdp_auto_wrap_policy: {policy} is not supported; FLARE's fusion needs each transformer "
                         "layer as one unit (TRANSFORMER_BASED_WRAP)")
    names = tuple(n.strip() for n in env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if n.strip())
    strategy = env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").strip().upper()
    reshard = env.get("FSDP_RESHARD_AFTER_FORWARD", "true" if strategy != "SHARD_GRAD_OP" else "false")
    return ShardingPlan(names or None, reshard.strip().lower() != "false")


def check_sharding(device_type: str, dtype_name: str, load_in_4bit: bool, english_gate: bool = False,
                   env: Mapping[str, str] | None = None) -> None:
    """Refuse a study the FSDP2 launch config cannot train (called by the plan, before any work)."""
    env = os.environ if env is None else env
    if requested_sharding(env) is None:
        return
    if english_gate:
        raise FlareError("adapter.english_gate with FSDP2 is not supported (fully_shard refuses its scalar gates); "
                         "use DDP or one process")
    if load_in_4bit:
        # measured: fully_shard over NF4 weights runs but computes another loss (benchmarks/fsdp2_4bit_probe.py)
        raise FlareError("load_in_4bit with FSDP2 is not supported: sharded bitsandbytes 4-bit weights compute wrong "
                         "outputs on this version; use a bfloat16 base (dtype: bfloat16) or one process")
    if device_type not in ("cuda", "cpu"):
        raise FlareError(f"FSDP2 training runs on CUDA GPUs or the CPU, not on {device_type}")
    precision = env.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower()
    if precision in _PRECISION and _PRECISION[precision] != dtype_name:
        raise FlareError(f"the accelerate config's mixed_precision: {precision} differs from the study's dtype "
                         f"{dtype_name}; set one to match the other (mixed_precision: no for a float32 study)")
