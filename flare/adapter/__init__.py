"""The FLARE adapter core: config, fusion, English-side capture, model wrapper, save/load."""

from flare.adapter.config import FlareConfig
from flare.adapter.io import load_flare_model
from flare.adapter.model import FlareModel, get_flare_model

__all__ = ["FlareConfig", "FlareModel", "get_flare_model", "load_flare_model"]
