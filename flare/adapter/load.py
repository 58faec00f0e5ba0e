"""Loading a saved FLARE adapter onto its base model (the public entry point; io.py does the work)."""

from __future__ import annotations

import os

from torch import nn

from flare.adapter.io import load_onto
from flare.adapter.model import FlareModel


def load_flare_model(
    base_model: nn.Module, directory: str | os.PathLike, is_trainable: bool = False, revision: str | None = None,
    adapter_name: str | None = None,
) -> FlareModel:
    """Put a saved FLARE adapter (a folder, a Trainer checkpoint folder or a Hub model id) on
    base_model (the same base it was trained on), under the name it was saved with unless
    adapter_name says otherwise. As with PEFT, the model is in eval mode unless is_trainable."""
    return load_onto(FlareModel, base_model, directory, is_trainable, revision, adapter_name)
