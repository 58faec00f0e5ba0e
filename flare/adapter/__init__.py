"""The FLARE adapter core: config, fusion, English-side capture, model wrapper, save/load, the
PEFT face of the model (citizen.py) and a collator for the English side."""

from flare.adapter.collate import SourceCollator
from flare.adapter.config import FlareConfig
from flare.adapter.io import load_flare_model
from flare.adapter.model import FlareModel, get_flare_model

__all__ = ["FlareConfig", "FlareModel", "SourceCollator", "get_flare_model", "load_flare_model"]
