"""The English pass once per example: FlareModel.forward's English states served from a memo.

What the English pass records cannot change while an adapter trains (adapters off, eval mode,
frozen base), so an example's states are computed once and reused in later epochs and in every
validation and test pass. Two facts shape this module:

* A row's states are not a fixed function of its tokens: on the CPU in fp32 they differ in the
  last bits with the batch's padded length and number of rows (BLAS and attention kernels pick
  other blockings; measured in BENCHMARKS.md). So every example's English pass runs in one
  canonical layout, `rows` rows padded to `length` tokens, with the cache and without it
  (`memoize=False`): turning the cache on or off never changes a result.
* Dropout on the English side (lora_dropout) acts on the recorded *inputs* inside the fusion hook,
  so the states are handed to the forward at the batch's own shape (B, Ls, width), zeros at padding,
  and dropout draws exactly what it draws without a cache. Padding never fuses
  (mask_source_padding), so its zeros never reach an output or a gradient.

States live in RAM up to `ram_bytes`; past that, in safetensors shards under `spill_dir`, read
memory-mapped; past `disk_bytes` too, they are recomputed (in the same layout) each time.
Keys: the example's English tokens (with its mask and further source_* inputs) and a fingerprint
of the frozen backbone's weights, the recorded modules, source_position and the layout.

One cache may serve several models in turn (a study's runs share a stage-1 backbone and, on a
parallel dataset, the same English sentences): a model whose fingerprint equals the one served
before reuses the states; a model with another fingerprint empties the cache first. So an English
sentence's pass runs once per study, not once per run.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from flare.errors import FlareError

_ADAPTER_PARTS = ("lora_", "modules_to_save", "trainable_tokens", "fusion_modules", "english_gates",
                  "source_projection")
SHARD_BYTES = 64 << 20  # spilled states are written in shards of about this size


@dataclass
class CacheStats:
    hits: int = 0  # rows served from the memo
    computed: int = 0  # rows whose English pass ran
    ram_bytes: int = 0
    disk_bytes: int = 0
    not_kept: int = 0  # rows computed but kept nowhere (both budgets full)


@dataclass
class _Row:
    first: int  # first real English position in the batch row
    end: int  # one past the last
    key: str


def backbone_fingerprint(model) -> str:
    """A hash of what shapes the English pass: the frozen weights (not the adapter's), the
    backbone's config, the recorded modules and where they record."""
    digest = hashlib.blake2b(digest_size=16)
    backbone = model.backbone
    digest.update(type(backbone).__name__.encode())
    digest.update(backbone.config.to_json_string(use_diff=False).encode())
    digest.update(json.dumps([model.fused_modules, model.flare_config.source_position]).encode())
    for name, tensor in backbone.state_dict().items():
        if any(part in name for part in _ADAPTER_PARTS):
            continue
        if hasattr(tensor, "full_tensor"):  # an FSDP2 shard (DTensor): every process hashes the whole weight
            tensor = tensor.full_tensor()
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


class EnglishStateCache:
    """English states per example for one FlareModel (set it as `model.english_state_cache`).

    Args:
        length: the canonical English length: every English pass runs padded to it (at least
            the longest English row the model will see; longer rows run their own pass).
        rows: the canonical number of rows of an English pass (short passes repeat a row).
        ram_bytes: states kept in memory, at most.
        disk_bytes: states spilled to `spill_dir` past the memory budget, at most.
        spill_dir: where spilled shards go (e.g. under the run folder); None: no spilling.
        memoize: False computes every batch's states in the canonical layout without keeping
            them: the same numbers as with the cache.
    """

    def __init__(self, length: int, rows: int, ram_bytes: int, disk_bytes: int = 0,
                 spill_dir: str | Path | None = None, memoize: bool = True) -> None:
        if length < 1 or rows < 1:
            raise FlareError(f"english cache: length {length} and rows {rows} must be positive")
        self.length, self.rows = length, rows
        self.ram_budget, self.disk_budget = ram_bytes, disk_bytes if spill_dir is not None else 0
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.memoize = memoize
        self.stats = CacheStats()
        self._fingerprint: str | None = None
        self._served: weakref.ref | None = None  # the model served last (a weak reference: ids are reused)
        self._groups: list[list[str]] | None = None  # fused modules that share one recorded tensor
        self._ram: dict[str, tuple[torch.Tensor, ...]] = {}
        self._pending: dict[str, tuple[torch.Tensor, ...]] = {}  # spilled, not yet written
        self._pending_bytes = 0
        self._on_disk: dict[str, Any] = {}  # key -> open shard
        self._shards = 0

    # ----------------------------------------------------------------- serving a batch

    def states(self, model, ids: torch.Tensor, mask: torch.Tensor | None,
               extra: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """{fused module: (B, Ls, width)} for this English batch, or None where a row cannot be
        laid out canonically (longer than `length`, unusual inputs): the model then runs its own
        English pass, with the cache or without it."""
        if not model.flare_config.mask_source_padding or ids.dim() != 2:
            return None  # padding states would fuse: they depend on the batch's padding
        if any(not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(ids.shape) for v in extra.values()):
            return None
        if self._served is None or self._served() is not model:
            self.serve(model)
        mask = torch.ones_like(ids) if mask is None else mask
        cpu_ids, cpu_mask = ids.detach().cpu(), mask.detach().cpu()
        cpu_extra = {k: v.detach().cpu() for k, v in sorted(extra.items())}
        rows = [self._row(cpu_ids, cpu_mask, cpu_extra, i) for i in range(ids.shape[0])]
        if any(r is None for r in rows):
            return None
        found = {r.key: self._lookup(r.key) for r in rows}
        missing = [i for i, r in enumerate(rows) if found[r.key] is None]
        for start in range(0, len(missing), self.rows):
            chunk = missing[start:start + self.rows]
            computed = self._compute(model, cpu_ids, cpu_mask, cpu_extra, [(i, rows[i]) for i in chunk], ids.device)
            for i, states in zip(chunk, computed):
                found[rows[i].key] = states
                self._keep(rows[i].key, states)
        self.stats.hits += len(rows) - len(missing)
        self.stats.computed += len(missing)
        return self._assemble(rows, found, ids.shape[1], ids.device)

    def serve(self, model) -> None:
        """Serve `model` from now on: its states are reused where its fingerprint equals the
        previous model's (the same frozen backbone and fusion settings); otherwise the cache is
        emptied first, and spilled shards of the new fingerprint (a resumed process) are opened."""
        fingerprint = backbone_fingerprint(model)
        if fingerprint != self._fingerprint:
            self._forget()
            self._fingerprint = fingerprint
            self._open_spilled()
        self._served = weakref.ref(model)

    def _forget(self) -> None:
        self._groups, self._ram, self._pending, self._pending_bytes, self._on_disk = None, {}, {}, 0, {}
        self.stats.ram_bytes = self.stats.disk_bytes = 0

    def _row(self, ids, mask, extra, i: int) -> _Row | None:
        real = mask[i].nonzero().flatten()
        first, end = (int(real[0]), int(real[-1]) + 1) if real.numel() else (0, 0)
        if end - first > self.length:
            return None
        return _Row(first, end, self._key(ids[i], mask[i], extra, i, first, end))

    def _key(self, ids, mask, extra, i: int, first: int, end: int) -> str:
        digest = hashlib.blake2b(self._fingerprint.encode(), digest_size=16)
        for tensor in (ids[first:end], mask[first:end], *(v[i, first:end] for v in extra.values())):
            digest.update(tensor.to(torch.int64).numpy().tobytes())
            digest.update(b"|")
        return digest.hexdigest()

    def _compute(self, model, ids, mask, extra, rows: list[tuple[int, _Row]], device) -> list[tuple[torch.Tensor, ...]]:
        """The canonical English pass of up to `self.rows` rows: each row's real span (first to last
        real token) at positions 0.. of `length`, as if the English side were alone and unpadded
        (a left-padded decoder row otherwise starts its positions where its batch's padding
        ends); unused rows repeat the first, so every pass has the same shape."""
        pad = getattr(model.backbone.config, "pad_token_id", None) or 0
        canonical_ids = torch.full((self.rows, self.length), pad, dtype=ids.dtype)
        canonical_mask = torch.zeros((self.rows, self.length), dtype=mask.dtype)
        canonical_extra = {k: torch.zeros((self.rows, self.length), dtype=v.dtype) for k, v in extra.items()}
        spans = []
        for slot in range(self.rows):
            i, row = rows[slot] if slot < len(rows) else rows[0]
            at = slice(0, row.end - row.first)
            canonical_ids[slot, at] = ids[i, row.first:row.end]
            canonical_mask[slot, at] = mask[i, row.first:row.end]
            for k, v in extra.items():
                canonical_extra[k][slot, at] = v[i, row.first:row.end]
            spans.append(at)
        recorded = model.english_states(canonical_ids.to(device), canonical_mask.to(device),
                                        **{k: v.to(device) for k, v in canonical_extra.items()})
        if self._groups is None:
            by_tensor: dict[int, list[str]] = {}
            for name, tensor in recorded.items():
                by_tensor.setdefault(id(tensor), []).append(name)
            self._groups = list(by_tensor.values())
        shared = [recorded[group[0]] for group in self._groups]
        return [tuple(t[slot, spans[slot]].to("cpu", copy=True) for t in shared) for slot in range(len(rows))]

    def _assemble(self, rows: list[_Row], found: dict, length: int, device) -> dict[str, torch.Tensor]:
        out = {}
        for g, group in enumerate(self._groups or []):
            sample = next(found[r.key][g] for r in rows)
            tensor = torch.zeros((len(rows), length, sample.shape[-1]), dtype=sample.dtype)
            for i, row in enumerate(rows):
                if row.end > row.first:
                    tensor[i, row.first:row.end] = found[row.key][g]
            tensor = tensor.to(device)
            out.update(dict.fromkeys(group, tensor))
        return out

    # ----------------------------------------------------------------- storage

    def _lookup(self, key: str) -> tuple[torch.Tensor, ...] | None:
        if key in self._ram:
            return self._ram[key]
        if key in self._pending:
            return self._pending[key]
        shard = self._on_disk.get(key)
        if shard is None:
            return None
        return tuple(shard.get_tensor(f"{key}/{g}") for g in range(len(self._groups)))

    def _keep(self, key: str, states: tuple[torch.Tensor, ...]) -> None:
        if not self.memoize:
            return
        size = sum(t.numel() * t.element_size() for t in states)
        if self.stats.ram_bytes + size <= self.ram_budget:
            self._ram[key] = states
            self.stats.ram_bytes += size
        elif self.stats.disk_bytes + size <= self.disk_budget:
            self._pending[key] = states
            self._pending_bytes += size
            self.stats.disk_bytes += size
            if self._pending_bytes >= SHARD_BYTES:
                self.flush()
        else:
            self.stats.not_kept += 1

    def flush(self) -> None:
        """Write the spilled states not yet on disk as one more shard."""
        if not self._pending or self.spill_dir is None:
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"{self._fingerprint[:12]}-{self._shards:05d}.safetensors"
        while path.exists():
            self._shards += 1
            path = self.spill_dir / f"{self._fingerprint[:12]}-{self._shards:05d}.safetensors"
        tensors = {f"{key}/{g}": t.contiguous() for key, states in self._pending.items() for g, t in enumerate(states)}
        save_file(tensors, str(path), metadata={"fingerprint": self._fingerprint, "groups": json.dumps(self._groups)})
        shard = safe_open(str(path), framework="pt")  # memory-mapped reads
        for key in self._pending:
            self._on_disk[key] = shard
        self._pending, self._pending_bytes = {}, 0
        self._shards += 1

    def _open_spilled(self) -> None:
        """Shards a previous process spilled for the same fingerprint (a resumed run); others
        (another backbone or setting) are stale and removed."""
        if self.spill_dir is None or not self.spill_dir.is_dir() or not self.memoize:
            return
        for path in sorted(self.spill_dir.glob("*.safetensors")):
            try:
                shard = safe_open(str(path), framework="pt")
                metadata = shard.metadata() or {}
            except (OSError, SafetensorError):  # an unreadable leftover shard is simply not reused
                path.unlink(missing_ok=True)
                continue
            if metadata.get("fingerprint") != self._fingerprint:
                path.unlink(missing_ok=True)
                continue
            self._groups = json.loads(metadata["groups"])
            for name in shard.keys():  # noqa: SIM118 - safe_open has keys(), no iteration
                key = name.split("/", 1)[0]
                if key not in self._on_disk and self.stats.disk_bytes <= self.disk_budget:
                    self._on_disk[key] = shard
            self.stats.disk_bytes += path.stat().st_size
            self._shards += 1
