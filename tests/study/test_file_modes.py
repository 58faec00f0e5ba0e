"""Outputs get the modes the user's umask gives a plain open()/mkdir(), not tempfile's private ones."""

import os
import stat

import pytest

from flare.files import atomic_dir, write_atomically


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_atomically(tmp_path / "results.md", "table\n")
        with atomic_dir(tmp_path / "adapter") as staging:
            (staging / "weights").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.md").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "adapter").stat().st_mode) == 0o777 & ~umask
