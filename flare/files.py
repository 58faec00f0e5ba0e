"""Crash-safe file writing: every output goes to a temporary file in the same folder and is then
renamed into place, so a reader (or a resumed run) never sees half a file; results.jsonl grows by
locked appends (`append_line`) and an output folder has one writer at a time (`folder_lock`).
Text inputs are read through `read_text`, which turns a wrong encoding into one line naming the
file and line, every JSON Lines file through `read_jsonl` and every YAML file through `load_yaml`,
the project's one loader of each."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from flare.errors import FlareError


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_if_created(path: Path, directory: bool = False) -> None:
    """Give a staged file or folder the mode a plain open()/mkdir() would have: tempfile creates
    them private (0600/0700), which would make every output unreadable to the user's group."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp)
        _as_if_created(Path(temp))
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
        _as_if_created(staging, directory=True)
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


def read_text(path: str | os.PathLike, shared_lock: bool = False) -> str:
    """A UTF-8 text file (a UTF-8 byte-order mark is dropped); any other encoding is a FlareError
    naming the file and the line of the first undecodable byte. `shared_lock`: read under a shared
    fcntl lock, so no `append_line` is halfway through."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            if shared_lock:
                fcntl.flock(handle, fcntl.LOCK_SH)
            data = handle.read()
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


def read_jsonl(path: str | os.PathLike, shared_lock: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a JSON Lines file, each with its line number (from 1), for every reader of
    one: custom datasets, translation files and results.jsonl.

    The file is read by `read_text` (UTF-8 only, a byte-order mark dropped, `shared_lock` as
    there). Lines end at "\n" only ("\r\n" works; a U+2028 inside a string does not split a line);
    blank lines are skipped; a missing newline after the last line is fine. Every other line must
    be one JSON object, else a one-line FlareError names the file and line: "not valid JSON (why)"
    or "not a JSON object". That includes a last line cut short by a killed writer: it is reported,
    never dropped, because a silently lost record would change what the caller computes."""
    path = Path(path)
    objects = []
    for number, line in enumerate(read_text(path, shared_lock=shared_lock).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise FlareError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
        if not isinstance(value, dict):
            raise FlareError(f"{path}: line {number} is not a JSON object")
        objects.append((number, value))
    return objects


# --- YAML -----------------------------------------------------------------------------------------

MAX_YAML_BYTES = 1 << 20  # a study or task file is a few hundred bytes; anything near this is not one
MAX_YAML_VALUES = 100_000  # values after alias expansion: an "alias bomb" expands 1 kB into gigabytes


class _Loader(yaml.SafeLoader):
    """The safe loader (no Python objects) that also refuses duplicate keys, which would otherwise
    let the last one win silently, and reads YAML 1.2 floats: `1e-4` is a number, not a string."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class names it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {str(key)[:60]!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, whose floats need a dot; 1.2 (and JSON, and the CLI) also accept 1e-4
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _expanded_size(root: yaml.Node, where: str) -> int:
    """How many values the document holds once every alias is expanded, computed on the node graph
    (each shared node once), so a bomb is measured without being expanded."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise FlareError(f"{where}: line {node.start_mark.line + 1}: a YAML alias refers to itself; refused")
        open_nodes.add(key)
        children = node.value if isinstance(node.value, list) else []
        total = 1
        for child in children:
            total += sum(size(part) for part in child) if isinstance(child, tuple) else size(child)
            if total > MAX_YAML_VALUES:
                break
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root)


def load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document with the project's loader; every problem is one FlareError line
    naming `where`. Size and alias expansion are checked on the parsed node graph, before any
    Python object is built, so a hostile file costs no memory."""
    if len(text) > MAX_YAML_BYTES:
        raise FlareError(f"{where}: {len(text)} characters is too large for a settings file (limit {MAX_YAML_BYTES})")
    try:
        loader = _Loader(text)  # its reader refuses control characters (NUL...) before anything is parsed
    except yaml.reader.ReaderError as error:
        line = text[: error.position].count("\n") + 1
        raise FlareError(f"{where}: line {line} holds the control character U+{error.character:04X}, "
                         "which YAML does not allow") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, where) > MAX_YAML_VALUES:
            raise FlareError(
                f"{where}: its aliases expand to more than {MAX_YAML_VALUES} values (a YAML alias bomb?); refused"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise FlareError(f"{where}:{line} is not valid YAML ({problem})") from None
    except RecursionError:
        raise FlareError(f"{where}: nested too deeply to be a settings file") from None
    finally:
        loader.dispose()


# --- Locks and appends ----------------------------------------------------------------------------

LOCK_NAME = ".flare.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str = "flare") -> Iterator[Path]:
    """Hold `folder`'s lock file while the block runs: one writer per output folder. The lock is an
    fcntl lock, so the kernel drops it when its holder dies however it dies; the file records the
    holder (pid, host) to name it to whoever is refused, and a file left by a dead holder is taken
    over with a note on stderr."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for as long as the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            handle.close()
            raise FlareError(
                f"output_dir {folder} is in use by {holder} (lock file {path}); wait for it to finish or use "
                "another output_dir"
            ) from None
        # the previous holder may have removed the file between our open and our lock: then we
        # locked an orphan and must start over on the file that is there now
        if path.exists() and os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
            break
        handle.close()
    try:
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            print(f"flare: taking over the lock of {_describe(previous)}, which is no longer running", file=sys.stderr)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command}) + "\n")
        handle.flush()
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still locked, so nobody can lock the old file meanwhile
        handle.close()


def _holder(path: Path) -> str:
    try:
        return _describe(path.read_text(encoding="utf-8").strip())
    except OSError:
        return "another process"


def _describe(content: str) -> str:
    try:
        holder = json.loads(content)
        return f"process {int(holder['pid'])} on {holder['host']} ({holder.get('command', 'flare')})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a shared file (results.jsonl) under an exclusive fcntl lock, so
    concurrent writers never lose or interleave a record. A failed write (a full disk) is cut back,
    and so is a torn last line a killed writer left: a reader only ever sees whole lines."""
    if "\n" in line:
        raise ValueError("append_line takes a single line")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        try:
            size = os.fstat(out.fileno()).st_size
            if size:
                with open(path, "rb") as current:
                    current.seek(size - 1)
                    if current.read(1) != b"\n":
                        current.seek(0)
                        size = current.read().rfind(b"\n") + 1
                        os.truncate(path, size)
            try:
                out.write(line.encode("utf-8") + b"\n")
                out.flush()
                os.fsync(out.fileno())
            except BaseException:
                os.truncate(path, size)
                raise
        finally:
            fcntl.flock(out, fcntl.LOCK_UN)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def check_name(value: str, what: str) -> str:
    """A name that becomes a file or folder name (task, split, language code): letters, digits and
    `_ . + -`, never a path separator or `..`, so nothing is written outside its folder."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise FlareError(
            f"{what} {value[:60]!r} cannot name a folder: use letters, digits, '_', '.', '+' or '-' (no '/' or '..')"
        )
    return value
