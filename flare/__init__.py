"""flare-xlt: FLARE (Fusion for Language Representations) for parameter-efficient cross-lingual transfer."""

from flare.adapter import FlareConfig, FlareModel, get_flare_model, load_flare_model
from flare.errors import FlareError

__version__ = "0.1.0"
__all__ = ["FlareConfig", "FlareError", "FlareModel", "get_flare_model", "load_flare_model", "__version__"]
