"""Shared fixtures. Tests read the real datasets from ../shared/data unless FLARE_DATA_DIR says otherwise."""

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("FLARE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))

# Two cores on CI: more threads than cores only adds contention.
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped where torch sees none (`make test-gpu` runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"datasets not found at {DATA_DIR}")
    return DATA_DIR

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests import their shared builders (tiny_models)
