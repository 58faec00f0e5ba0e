"""The FLARE adapter core: config, fusion, English-side capture, model wrapper, save/load, the
PEFT face of the model (citizen.py) and a collator for the English side.

Names load on first use (PEP 562): `flare.adapter.config` (the settings' choices) is read by the
command line before it knows whether torch and peft are needed at all."""

import importlib

_LAZY = {
    "FlareConfig": "flare.adapter.config",
    "FlareModel": "flare.adapter.model",
    "SourceCollator": "flare.adapter.collate",
    "get_flare_model": "flare.adapter.model",
    "load_flare_model": "flare.adapter.io",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flare.adapter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
