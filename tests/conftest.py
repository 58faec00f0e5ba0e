"""Shared fixtures. Tests read the real datasets where the commands do (flare/data/locations.py):
FLARE_DATA_DIR, else ../shared/data beside the clone; without either, the tests that need them skip."""

from pathlib import Path

import pytest
import torch

from flare.data.locations import HOW_TO_SET, expected_data_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = expected_data_dir() or REPO_ROOT.parent / "shared" / "data"

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
        pytest.skip(f"datasets not found at {DATA_DIR}: {HOW_TO_SET}")
    return DATA_DIR

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests import their shared builders (tiny_models)
