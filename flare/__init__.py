"""flare-xlt: FLARE (Fusion for Language Representations) for parameter-efficient cross-lingual transfer."""

import logging

# bitsandbytes warns on import that its optional Hub-fetched CPU kernel is missing; that package
# must not be installed offline, and the built-in CPU path works, so the warning is only noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from flare.adapter import FlareConfig, FlareModel, get_flare_model, load_flare_model  # noqa: E402
from flare.errors import FlareError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["FlareConfig", "FlareError", "FlareModel", "__version__", "get_flare_model", "load_flare_model"]
