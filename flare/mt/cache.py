"""SQLite store of translated sentences (one commit per batch), so that translation, the slowest
step, never translates a sentence twice and an interrupted run resumes where it stopped."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from flare.errors import FlareError, first_line


class TranslationCache:
    """SQLite store of translations keyed by (model, source code, target code, settings, text)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=120)
        except (OSError, sqlite3.Error) as error:
            raise FlareError(
                f"translation cache {path}: cannot create it ({getattr(error, 'strerror', None) or error})"
            ) from None
        try:
            # WAL lets a second process read the cache while one writes to it.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS translations (model TEXT, src TEXT, tgt TEXT, settings TEXT,"
                " source TEXT, translation TEXT, PRIMARY KEY (model, src, tgt, settings, source))"
            )
            self._db.commit()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise FlareError(
                f"translation cache {path}: unusable ({first_line(error)}); delete it to start a new cache"
            ) from None

    def lookup(self, namespace: tuple[str, str, str, str], texts: Sequence[str]) -> dict[str, str]:
        """Cached translations of ``texts`` under ``namespace = (model, src, tgt, settings)``."""
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(texts))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT source, translation FROM translations WHERE model=? AND src=? AND tgt=?"
                f" AND settings=? AND source IN ({marks})", (*namespace, *chunk)
            )
            found.update(rows)
        return found

    def store(self, namespace: tuple[str, str, str, str], pairs: Iterable[tuple[str, str]]) -> None:
        """Insert translations and commit at once, so a crash right after loses nothing."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO translations VALUES (?, ?, ?, ?, ?, ?)",
                [(*namespace, source, target) for source, target in pairs],
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TranslationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
