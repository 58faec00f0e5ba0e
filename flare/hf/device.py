"""The one device and dtype policy of every model the project loads.

`device`: "auto" is this process's CUDA GPU, else Apple's MPS, else the CPU; "cuda" is this
process's CUDA GPU; "cuda:N" one GPU by number; "mps"; "cpu". "This process's GPU" is
cuda:LOCAL_RANK: torchrun and `accelerate launch` start one process per GPU and number them with
LOCAL_RANK, so each process trains on its own GPU, the one accelerate also puts it on.

`dtype` is the dtype of the frozen weights: "auto" is bfloat16 on a GPU that supports it, else
float16 on a GPU, and float32 on the CPU; or "float32", "bfloat16", "float16". Trainable
weights (LoRA, fusion, projection, task head) stay float32, as PEFT keeps them, and forward
passes run under autocast in `dtype`. A 4-bit base is NF4 with double quantisation and computes
in `dtype`.

A device that does not exist, or a dtype or 4-bit setting it cannot run, is refused with one
FlareError line before anything is loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import BitsAndBytesConfig

from flare import extras
from flare.errors import FlareError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def process_index() -> int:
    """This process's number among the processes of one machine (0 when launched alone)."""
    value = os.environ.get("LOCAL_RANK", "0")
    try:
        return int(value)
    except ValueError:
        raise FlareError(f"LOCAL_RANK={value!r} is not a process number") from None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _cuda_gpu(index: int, asked: str) -> torch.device:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        cuda = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise FlareError(f"device: {asked} asked for, but this machine has no usable CUDA GPU (torch {cuda})")
    if index >= count:
        names = ", ".join(f"cuda:{i}" for i in range(count))
        raise FlareError(f"device: {asked} is cuda:{index}, which does not exist (this machine has {names})")
    return torch.device("cuda", index)


def resolve_device(name: str) -> torch.device:
    """The torch device a `device` setting means on this machine, in this process."""
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return _cuda_gpu(process_index() % torch.cuda.device_count(), "auto")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda":
        return _cuda_gpu(process_index(), "cuda")
    match = re.fullmatch(r"cuda:(\d+)", text)
    if match:
        return _cuda_gpu(int(match.group(1)), text)
    if text == "mps":
        if not _mps_available():
            raise FlareError("device: mps asked for, but this machine has no usable Apple MPS device")
        return torch.device("mps")
    raise FlareError(f"device: {name!r} is not one of {', '.join(DEVICES)}")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype a `dtype` setting means on `device`."""
    text = str(name).strip().lower()
    if text == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
        return torch.bfloat16 if device.type == "mps" else torch.float32
    if text not in DTYPES:
        raise FlareError(f"dtype: {name!r} is not one of auto, {', '.join(DTYPES)}")
    dtype = DTYPES[text]
    if dtype == torch.float16 and device.type == "cpu":
        # CPU kernels in half precision are slow or missing, and accelerate refuses fp16 training there
        raise FlareError("dtype: float16 needs a GPU; on the CPU use float32 or bfloat16")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported(
        including_emulation=False
    ):
        raise FlareError(f"dtype: {torch.cuda.get_device_name(device)} has no bfloat16; use float16 or float32")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Placement:
    """Where and in which dtype the models of a run live."""

    device: torch.device
    dtype: torch.dtype
    load_in_4bit: bool = False

    def describe(self) -> str:
        """One line for the terminal and the records, e.g.
        `device: cuda:0 (NVIDIA H200, 139 GiB), dtype bfloat16, 4-bit nf4`."""
        if self.device.type == "cuda":
            properties = torch.cuda.get_device_properties(self.device)
            where = f"{self.device} ({properties.name}, {properties.total_memory / 2**30:.0f} GiB)"
        elif self.device.type == "cpu":
            where = f"cpu ({torch.get_num_threads()} threads)"
        else:
            where = str(self.device)
        quantised = ", 4-bit nf4" if self.load_in_4bit else ""
        return f"device: {where}, dtype {dtype_name(self.dtype)}{quantised}"

    def record(self) -> dict[str, Any]:
        """The placement as fields of a result record."""
        return {"device": str(self.device), "dtype": dtype_name(self.dtype), "load_in_4bit": self.load_in_4bit,
                "placement": self.describe()}

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """What `from_pretrained` needs to build the model in place: weights go straight to the
        device in `dtype` (no full-precision copy in CPU memory first)."""
        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if self.load_in_4bit:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=self.dtype,
            )
        if self.load_in_4bit or self.device.type != "cpu":
            kwargs["device_map"] = {"": str(self.device)}
        return kwargs

    def full_precision(self) -> Placement:
        """The same device in float32, not quantised (the exact merge of a 4-bit stage 1)."""
        return Placement(self.device, torch.float32, False)

    def check_mixed_precision(self, value: str, where: str) -> None:
        if value == "fp16" and self.device.type == "cpu":
            raise FlareError(f"{where}: fp16 needs a GPU; on the CPU use bf16 or no")


def resolve_placement(device: str = "auto", dtype: str = "auto", load_in_4bit: bool = False) -> Placement:
    """The placement of a run, or a one-line FlareError when this machine cannot provide it."""
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if load_in_4bit:
        if torch_device.type not in ("cuda", "cpu"):
            raise FlareError(f"load_in_4bit: bitsandbytes 4-bit runs on a CUDA GPU or the CPU, not {torch_device}")
        extras.check("bitsandbytes")
    return Placement(torch_device, torch_dtype, load_in_4bit)


def compute_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype the model computes in: that of most of its frozen floating-point weights (the
    base; trainable adapter weights are float32 whatever the base is). A 4-bit base counts its
    unquantised weights (norms, embeddings), which are loaded in the compute dtype."""
    counts: Counter = Counter()
    trainable: Counter = Counter()
    for parameter in model.parameters():
        if parameter.is_floating_point():
            (trainable if parameter.requires_grad else counts)[parameter.dtype] += parameter.numel()
    chosen = counts or trainable
    return chosen.most_common(1)[0][0] if chosen else torch.float32


def autocast_dtype(model: torch.nn.Module, mixed_precision: str = "no") -> torch.dtype | None:
    """The autocast dtype of a forward: an explicit bf16/fp16 mixed precision, else the base's
    dtype; None for float32 (no autocast)."""
    explicit = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    dtype = explicit or compute_dtype(model)
    return None if dtype == torch.float32 else dtype


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast on `device` in `dtype`; nothing for float32."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
