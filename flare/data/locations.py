"""Where datasets are found: one answer for the tests, the quick start and the commands.

Order: an explicit folder, else the FLARE_DATA_DIR environment variable, else `../shared/data`
beside a source checkout of flare-xlt (the developers' layout). An installed package has no
checkout around it, so only the first two apply there. The quick start alone falls back further, to
the NusaX Javanese/English slice bundled inside the package (`flare/data/bundled/`).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "FLARE_DATA_DIR"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../flare
BUNDLED_DATA_DIR = Path(__file__).resolve().parent / "bundled"
HOW_TO_SET = (
    f"set {DATA_DIR_ENV} to a datasets folder (`flare download --data_dir DIR` fetches NusaX, XNLI and "
    "TyDiQA into one)"
)


def checkout_root(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The source checkout holding this package (its pyproject.toml names flare-xlt), or None for
    an installed copy in site-packages."""
    root = package_dir.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "flare-xlt"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def checkout_data_dir(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """`../shared/data` beside the checkout (whether or not it exists), or None outside a checkout."""
    root = checkout_root(package_dir)
    return None if root is None else root.parent / "shared" / "data"


def default_data_dir(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """FLARE_DATA_DIR when set, else `../shared/data` beside a checkout when it exists, else None."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured)
    beside = checkout_data_dir(package_dir)
    return beside if beside is not None and beside.is_dir() else None


def expected_data_dir(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The datasets folder as `default_data_dir` finds it, else where a checkout expects it
    (`../shared/data`, absent): what the tests read, or name when they skip."""
    return default_data_dir(package_dir) or checkout_data_dir(package_dir)
