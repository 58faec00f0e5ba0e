"""Stage 2's English-state cache (`data.english_cache`): whether a FLARE run's English states fit the
budgets, and the cache its model then uses in training, validation and test passes alike
(flare/adapter/english_cache.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from flare.adapter.english_cache import EnglishStateCache
from flare.errors import FlareError
from flare.hf.formats import PairFormatter
from flare.study.settings import DataSettings
from flare.study.sharding import requested_sharding

MIB = 1 << 20


def english_state_bytes(model, formatter: PairFormatter, items: list) -> tuple[int, int]:
    """(bytes the English states of `items` take, bytes per English token): the real English
    tokens of every formatted example times what the English pass records per token."""
    features = formatter.features(items, train=False)
    tokens = sum(sum(f["source_attention_mask"]) for f in features if "source_attention_mask" in f)
    sample = next((f for f in features if sum(f.get("source_attention_mask", [])) > 0), None)
    if sample is None:
        return 0, 0
    device = next(model.parameters()).device
    states = model.english_states(torch.tensor([sample["source_input_ids"][:1]], device=device))
    unique = {id(t): t for t in states.values()}.values()
    per_token = sum(t.shape[-1] * t.element_size() for t in unique)
    return tokens * per_token, per_token


def attach_english_cache(model, formatter: PairFormatter, items: list, data: DataSettings, rows: int,
                         spill_dir: Path, shared: EnglishStateCache | None = None) -> EnglishStateCache | None:
    """Give a FLARE model its English-state cache for one run. Every English pass then runs in one
    canonical layout (`rows` rows of the formatter's length), cached or not, so `english_cache`
    never changes a result. `shared` is the cache of the study's earlier runs: its states are
    reused where they fit the budgets beside this run's (same backbone, same English sentences:
    NusaX and XNLI are parallel, so every run of a study reads the same English). States that fit
    neither budget are recomputed with a one-line note; with english_cache "on" that is refused
    instead, before the run trains. Under FSDP2 sharding there is no cache (None): the English pass
    runs per batch inside the sharded forward."""
    if requested_sharding() is not None:  # FSDP2: the English pass must run inside the sharded root's forward
        if data.english_cache == "on":
            raise FlareError("data.english_cache: 'on' cannot be honoured under FSDP2 sharding; use auto or off")
        return None
    ram, disk = data.english_cache_ram_mib * MIB, data.english_cache_disk_mib * MIB
    memoize = data.english_cache != "off"
    if memoize:
        needed, _ = english_state_bytes(model, formatter, items)
        if needed > ram + disk:
            message = (f"this run's English states take {needed / MIB:.2f} MiB, more than english_cache_ram_mib + "
                       f"english_cache_disk_mib = {(ram + disk) // MIB} MiB")
            if data.english_cache == "on":
                raise FlareError(f"data.english_cache: {message}; raise them, or set english_cache: auto")
            print(f"    note: {message}: the English pass runs in every epoch", flush=True)
            memoize = False
        elif shared is not None and shared.memoize and (shared.length, shared.rows) == (formatter.max_length, rows) \
                and shared.stats.ram_bytes + shared.stats.disk_bytes + needed <= ram + disk:
            model.english_state_cache = shared  # serve() checks the backbone's fingerprint before any reuse
            return shared
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        spill_dir = spill_dir / f"rank{torch.distributed.get_rank()}"  # each process caches its own share
    if shared is not None and memoize:  # this cache replaces the earlier runs': their spilled shards go too
        shutil.rmtree(spill_dir, ignore_errors=True)
    cache = EnglishStateCache(formatter.max_length, rows, ram, disk, spill_dir, memoize)
    model.english_state_cache = cache
    return cache
