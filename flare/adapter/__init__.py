"""The FLARE adapter core: config, fusion, English-side capture, model wrapper, save/load, the
PEFT face of the model (peft_compat.py) and a collator for the English side.

Names load on first use (PEP 562): `flare.adapter.config` (the settings' choices) is read by the
command line before it knows whether torch and peft are needed at all."""

from flare.adapter.lazy import lazy_exports

_LAZY = {
    "FlareConfig": "flare.adapter.config",
    "EnglishStateCache": "flare.adapter.english_cache",
    "FlareModel": "flare.adapter.model",
    "SourceCollator": "flare.adapter.collate",
    "get_flare_model": "flare.adapter.build",
    "load_flare_model": "flare.adapter.build",
    "shard_flare_model": "flare.adapter.sharding",
}

__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
