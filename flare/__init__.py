"""flare-xlt: FLARE (Fusion for Language Representations) for parameter-efficient cross-lingual transfer.

The public names are imported on first use (PEP 562), so `import flare` and `flare --help` do not
pay for torch, transformers and peft until something needs them.
"""

import logging

# bitsandbytes warns on import that its optional Hub-fetched CPU kernel is missing; that package
# must not be installed offline, and the built-in CPU path works, so the warning is only noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from flare.adapter.lazy import lazy_exports  # noqa: E402
from flare.errors import FlareError  # noqa: E402

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "FlareConfig": "flare.adapter",
    "EnglishStateCache": "flare.adapter",
    "FlareModel": "flare.adapter",
    "get_flare_model": "flare.adapter",
    "load_flare_model": "flare.adapter",
    "SourceCollator": "flare.adapter",
    "shard_flare_model": "flare.adapter",
    "pairs_from_dataset": "flare.data.dataset_pairs",
    "task_from_dict": "flare.data.custom_task",
    "classification_metrics": "flare.hf.metrics",
}

__all__ = ["FlareError", "__version__", *_LAZY]
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
