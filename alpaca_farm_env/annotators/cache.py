"""Persistent SQLite cache of API annotations, written as each result arrives.

Rows are keyed on ``(config_hash, example_key)``: the hash of the member's config (template text, model, decoding
kwargs, parser, batch size, endpoint) and a digest of the example as presented (instruction with the input folded in,
output_1, output_2). A run killed half-way and resumed therefore finds every answered example and sends only the
missing ones. A ``requests`` table records each billed request (tokens and cost) so spend can be audited.

Nothing secret is stored: no API key, no base URL, no headers -- only the model name, the completion and token usage.

The rows are paid API answers: an unreadable cache file is never discarded or replaced silently; it raises
:class:`~alpaca_farm_env.errors.CorruptFileError` naming the file.
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import CorruptFileError
from ..utils import cache_dir, digest

__all__ = ["AnnotationCache", "CachedAnnotation", "example_key", "default_cache_path", "is_corrupt_database"]


def default_cache_path() -> Path:
    return cache_dir("annotations") / "openai_annotations.sqlite"


def is_corrupt_database(err: sqlite3.Error) -> bool:
    """Whether an sqlite3 error says the file is not a readable database (truncated, overwritten, not SQLite):
    SQLITE_NOTADB or SQLITE_CORRUPT. A locked, read-only or unopenable database is not corrupt."""
    name = getattr(err, "sqlite_errorname", None)  # Python >= 3.11
    if name is not None:
        return name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT"))
    return type(err) is sqlite3.DatabaseError  # both raise the bare class (others: OperationalError, ...)


def check_not_directory(path: Path, what: str) -> None:
    """A directory where an SQLite cache file should be: a clear error naming it (sqlite3 only says "unable to open
    database file")."""
    if path.is_dir():
        raise CorruptFileError(path, f"is a directory, expected the {what} file; remove it or pass another path")


def example_key(instruction: str, output_1: str, output_2: str) -> str:
    """Digest of one example as presented to the model (instruction already holds the folded input)."""
    return digest([instruction, output_1, output_2])[:40]


@dataclass
class CachedAnnotation:
    preference: float | None
    raw_completion: str | None
    cost: float
    model: str


_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    config_hash TEXT NOT NULL, example_key TEXT NOT NULL, member TEXT NOT NULL, model TEXT NOT NULL,
    preference REAL, raw_completion TEXT, cost REAL NOT NULL DEFAULT 0, request_id TEXT, created REAL NOT NULL,
    PRIMARY KEY (config_hash, example_key));
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, config_hash TEXT NOT NULL, member TEXT NOT NULL, model TEXT NOT NULL,
    n_examples INTEGER NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER, cost REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL);
"""


class AnnotationCache:
    """Thread-safe, crash-safe (WAL, one transaction per arriving batch) cache. ``path=":memory:"`` for a
    process-local cache."""

    def __init__(self, path: str | Path | None = None):
        self.path = str(path if path is not None else default_cache_path())
        if self.path != ":memory:":
            check_not_directory(Path(self.path), "SQLite annotations cache")
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=60, isolation_level=None)
        try:
            with self._db():
                if self.path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode=WAL")
                    self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(_SCHEMA)
        except BaseException:
            self._conn.close()
            raise

    @contextlib.contextmanager
    def _db(self) -> Iterator[None]:
        """Hold the lock; an unreadable database file -> CorruptFileError naming it (never discarded: paid rows)."""
        with self._lock:
            try:
                yield
            except sqlite3.DatabaseError as e:
                if not is_corrupt_database(e):
                    raise
                raise CorruptFileError(
                    self.path, f"the annotations cache is not a readable SQLite database ({e}). It holds paid API "
                    "answers, so it is left untouched: move it aside (e.g. rename it to *.corrupt) to start a new "
                    "cache, or pass another cache path (cache_path=...)") from e

    def get_many(self, config_hash: str, keys: Iterable[str]) -> dict[str, CachedAnnotation]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, CachedAnnotation] = {}
        with self._db():
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = ("SELECT example_key, preference, raw_completion, cost, model FROM annotations "
                     f"WHERE config_hash = ? AND example_key IN ({','.join('?' * len(chunk))})")
                for k, pref, raw, cost, model in self._conn.execute(q, [config_hash, *chunk]):
                    out[k] = CachedAnnotation(pref, raw, float(cost or 0.0), model)
        return out

    def put_batch(
        self, *, config_hash: str, member: str, model: str, request_id: str, items: list[tuple[str, float | None]],
        raw_completion: str | None, prompt_tokens: int | None, completion_tokens: int | None, cost: float,
        n_slots: int | None = None,
    ) -> None:
        """Store one answered request and its examples atomically (all or nothing). Each example is charged
        ``cost / n_slots`` (``n_slots`` = batch size incl. padding, as alpaca_eval divides price by batch_size)."""
        now = time.time()
        per_example = cost / max(1, n_slots or len(items))
        with self._db():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?,?,?,?,?)",
                    (request_id, config_hash, member, model, len(items), prompt_tokens, completion_tokens, cost, now),
                )
                self._conn.executemany(
                    "INSERT OR REPLACE INTO annotations VALUES (?,?,?,?,?,?,?,?,?)",
                    [(config_hash, k, member, model, pref, raw_completion, per_example, request_id, now)
                     for k, pref in items],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def count(self, config_hash: str | None = None) -> int:
        with self._db():
            if config_hash is None:
                return self._conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
            return self._conn.execute("SELECT COUNT(*) FROM annotations WHERE config_hash=?", (config_hash,)).fetchone()[0]

    def total_cost(self) -> float:
        with self._db():
            return float(self._conn.execute("SELECT COALESCE(SUM(cost), 0) FROM requests").fetchone()[0])

    def n_requests(self) -> int:
        with self._db():
            return self._conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def delete_unlabeled(self, config_hash: str | None = None) -> int:
        """Forget unparseable answers so the next run asks again (they are kept by default: never pay twice)."""
        with self._db():
            if config_hash is None:
                cur = self._conn.execute("DELETE FROM annotations WHERE preference IS NULL")
            else:
                cur = self._conn.execute("DELETE FROM annotations WHERE preference IS NULL AND config_hash=?", (config_hash,))
            return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()
