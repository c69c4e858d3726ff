"""The bank heads: on instructions with GPT-4-labelled answers in the data dir (the 805 eval instructions), an MLP over
hand features and answer-bank features (answer_bank.py), trained leave-own-model-out, cached as one ``.npz``."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..utils import atomic_write, cache_dir
from . import files
from .answer_bank import BANK_FEATURES, AnswerBank, BankHeads, fit_bank_head
from .config import JudgeConfig
from .features import HAND_FEATURES, full_prompt, hand_features
from .files import _install_packaged, _load_cached, _reading_npz
from .heads import feature_scale, member_weights
from .training_data import labels, load_training_pairs, with_synthetic

logger = logging.getLogger(__name__)

_BANKS: dict[tuple, AnswerBank] = {}


def bank_head_options(config: JudgeConfig) -> dict:
    """The keyword arguments of :func:`fit_bank_head` that ``config`` fixes."""
    return dict(hidden=config.bank_hidden, epochs=config.bank_epochs, lr=config.bank_lr,
                weight_decay=config.bank_weight_decay, batch_size=config.bank_batch_size)


def load_bank(
    data_dir: str | os.PathLike | None = None,
    models: Sequence[str] | None = None,
    max_pairs_per_model: int | None = None,
    tfidf_bits: int = 20,
) -> AnswerBank | None:
    """The answer bank of the local data dir's GPT-4 annotation files (one per process and selection), or ``None``
    when there are none (e.g. on the hub only: its ``alpaca_gpt4_preference`` pairs have no shared reference)."""
    from ..data import list_annotated_models, resolve_data_dir

    root = resolve_data_dir(data_dir)
    if root is None or not list_annotated_models(root):
        return None
    key = (str(root), tuple(models) if models else None, max_pairs_per_model, tfidf_bits)
    if key not in _BANKS:
        _BANKS[key] = LazyAnswerBank(load_training_pairs(root, models, max_pairs_per_model), tfidf_bits=tfidf_bits)
    return _BANKS[key]


class LazyAnswerBank(AnswerBank):
    """An :class:`AnswerBank` that knows its prompts at once and builds the rest (the TF-IDF matrix over every
    banked answer, ~10 s on 2 cores) on the first use that needs it.

    ``has`` and ``len`` answer from the set of prompt keys, taken from the rows (reading the annotation files is
    ~0.2 s), so a judge asked about prompts outside the bank (every training split's) never builds it. Everything
    else (``query``, ``features``, ``texts``, ``key``, ...) is the built bank's."""

    def __init__(self, rows: Sequence[dict], tfidf_bits: int = 20):  # noqa: D107 (no super().__init__: lazy)
        self._rows = list(rows)
        self._tfidf_bits = tfidf_bits
        self._keys = frozenset(full_prompt(r["instruction"], r.get("input", "") or "")
                               for r in self._rows if not r.get("synthetic"))
        self._built: AnswerBank | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the full bank has been built (tests and benchmarks check that training prompts never build it)."""
        return self._built is not None

    def materialize(self) -> AnswerBank:
        if self._built is None:
            with self._lock:
                if self._built is None:
                    self._built = AnswerBank(self._rows, tfidf_bits=self._tfidf_bits)
        return self._built

    def __getattr__(self, name: str) -> Any:  # only called for attributes not found normally: the built bank's
        if name.startswith("__") or name in ("_rows", "_tfidf_bits", "_keys", "_built", "_lock"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def __len__(self) -> int:
        return len(self._keys)

    def has(self, instruction: str, inp: str = "") -> bool:
        return full_prompt(instruction, inp or "") in self._keys

    def query(self, instructions, inputs, outputs):
        return self.materialize().query(instructions, inputs, outputs)

    def features(self, queries, exclude=None, exclude_texts=None):
        return self.materialize().features(queries, exclude, exclude_texts)


def banked_features(
    bank: AnswerBank,
    instructions: Sequence[str],
    inputs: Sequence[str],
    outputs: Sequence[str],
    exclude: Sequence[Sequence[str]] | None = None,
    exclude_texts: Sequence[Sequence[str]] | None = None,
) -> np.ndarray:
    """``[hand features | bank features]`` per (instruction, input, output); the input of the bank heads."""
    prompts = [full_prompt(i, x or "") for i, x in zip(instructions, inputs)]
    hand = (np.stack([hand_features(p, o) for p, o in zip(prompts, outputs)]) if len(outputs)
            else np.zeros((0, len(HAND_FEATURES)), np.float32))
    queries = bank.query(instructions, inputs, outputs)
    return np.concatenate([hand, bank.features(queries, exclude, exclude_texts)], axis=1)


@dataclass
class BankArtifact:
    heads: BankHeads
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        atomic_write(Path(path), lambda f: np.savez_compressed(
            f, meta=np.asarray(json.dumps(self.meta, sort_keys=True)), **self.heads.arrays()))

    @classmethod
    def load(cls, path: Path) -> "BankArtifact":
        """Raises :class:`CorruptFileError` naming ``path`` when it is not a readable bank-heads file."""
        with _reading_npz(path, "bank-heads artifact") as z:
            return cls(heads=BankHeads.from_arrays(z), meta=json.loads(str(z["meta"])))


def _pair_bank_features(bank: AnswerBank, rows: Sequence[dict], exclude: Sequence[Sequence[str]]):
    """(X(output_1), X(output_2)) with the same bank exclusion for both outputs of each row."""
    ins = [r["instruction"] for r in rows]
    inp = [r.get("input", "") or "" for r in rows]
    return (banked_features(bank, ins, inp, [r["output_1"] for r in rows], exclude),
            banked_features(bank, ins, inp, [r["output_2"] for r in rows], exclude))


def _bank_stats(X1: np.ndarray, X2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = np.concatenate([X1, X2]).astype(np.float64)
    return both.mean(0), feature_scale(X1, X2).astype(np.float64)


def train_bank_heads(
    config: JudgeConfig, bank: AnswerBank, rows: Sequence[dict], progress: bool = True
) -> BankArtifact:
    """Fit the bank heads (head 0 on all pairs, then ``n_bootstrap`` bootstrap members) on GPT-4's labels.

    Each training pair sees the bank without its own model's answers (both outputs, leave-own-model-out), so the
    bank features carry what other models' labelled answers say, never the label being fitted.
    """
    t0 = time.time()
    real = list(rows)
    all_rows, base_weight = with_synthetic(real, config)
    exclude = [(r["model"],) for r in all_rows]
    X1, X2 = _pair_bank_features(bank, all_rows, exclude)
    mu, scale = _bank_stats(X1[: len(real)], X2[: len(real)])
    y = labels(all_rows)
    parts = [fit_bank_head(X1, X2, y, weight, mu, scale, **bank_head_options(config), seed=config.seed * 1000 + h)
             for h, weight in member_weights(config, base_weight, "fitting bank heads", progress)]
    heads = BankHeads(mu=mu, scale=scale, W1=np.stack([p[0] for p in parts]), b1=np.stack([p[1] for p in parts]),
                      W2=np.stack([p[2] for p in parts]), wlin=np.stack([p[3] for p in parts]))
    meta = {
        "config": dataclasses.asdict(config),
        "bank": bank.key,
        "bank_instructions": len(bank),
        "bank_entries": bank.n_entries,
        "n_pairs": len(real),
        "n_synthetic": len(all_rows) - len(real),
        "models": sorted({r["model"] for r in real}),
        "features": list(HAND_FEATURES) + list(BANK_FEATURES),
        "train_seconds": round(time.time() - t0, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return BankArtifact(heads=heads, meta=meta)


def bank_artifact_path(config: JudgeConfig, data: str) -> Path:
    """The cached bank heads for ``config`` built from ``data`` (the :func:`~.config.data_fingerprint` of the
    annotation files the bank holds)."""
    return cache_dir("judge", "artifacts") / f"distilled_bank_{config.bank_key(data)}.npz"


def get_bank_heads(
    config: JudgeConfig,
    bank: AnswerBank,
    data: str,
    *,
    retrain: bool = False,
    progress: bool = True,
) -> tuple[BankArtifact, Path]:
    """Cached bank heads for (config, data); else the packaged ones if they match; else trained (about a minute).
    ``bank`` must be the bank of ``data`` (``load_bank`` of the same data dir and selection)."""
    path = bank_artifact_path(config, data)
    if not retrain:
        art = _load_cached(path, BankArtifact.load)  # an unreadable one is moved aside (warning) and rebuilt
        if art is not None:
            return art, path
        shipped = files.PACKAGED_ARTIFACTS / path.name
        if shipped.is_file():
            return _install_packaged(shipped, path, BankArtifact.load), path
    logger.info("training the distilled judge's bank heads; cached at %s", path)
    art = train_bank_heads(config, bank, bank.rows, progress=progress)  # the pairs the bank holds, not read again
    art.save(path)
    files.BUILD_COUNT += 1
    return art, path
