"""Crash-safe file writing: every output goes to a temporary file in the same folder and is then
renamed into place, so a reader (or a resumed run) never sees half a file. Text inputs are read
through `read_text`, which turns a wrong encoding into one line naming the file and line."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flare.errors import FlareError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike, content: str) -> None:
    """Write text through a synced temporary file and os.replace."""
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it takes the place of `path` (an
    older `path` is removed only after the new one is complete), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staging
        if path.exists():
            retired = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            os.replace(path, retired / path.name)
            try:
                os.replace(staging, path)
            except BaseException:  # e.g. Ctrl-C between the two renames: put the old one back
                if not path.exists():
                    os.replace(retired / path.name, path)
                    retired.rmdir()
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file (a UTF-8 byte-order mark is dropped); any other encoding is a FlareError
    naming the file and the line of the first undecodable byte."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FlareError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FlareError(f"{path}: is a directory, not a file") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FlareError(f"{path}: is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise FlareError(
            f"{path}: line {line} is not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as UTF-8"
        ) from None
