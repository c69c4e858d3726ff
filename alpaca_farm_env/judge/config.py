"""What determines a distilled judge, and its identity.

A judgment is a function of: the configuration (:class:`JudgeConfig`, every hyper-parameter of the training), the
features it computes (their names and the encoder), the data it was trained on (:func:`data_fingerprint`: a digest of
the GPT-4 annotation files' bytes) and the code's format versions. The artifacts' file names are digests of all of
these (:meth:`JudgeConfig.key`, :meth:`JudgeConfig.bank_key`), and the judge's identity (``judge.py``) is a digest of
the artifacts it uses, so a changed judge never reuses an old judge's artifacts, annotation caches or run dirs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..utils import digest
from .features import DEFAULT_MAX_TOKENS

VARIANTS = ("fast", "best")  # fast: linear head over frozen MiniLM; best: fine-tuned cross-encoder (cross_encoder.py)
ARTIFACT_FORMAT = 3  # 2: keys hold the feature spec and the training data's fingerprint; 3: the fitting knobs below
BANK_FORMAT = 3
JUDGE_FORMAT = 1  # the judge identity's own layout
BANK_FIELDS = ("bank", "bank_hidden", "bank_epochs", "bank_lr", "bank_weight_decay", "bank_batch_size", "tfidf_bits")


@dataclass
class JudgeConfig:
    """What determines a trained judge (its cache key)."""

    variant: str = "fast"
    max_tokens: int = DEFAULT_MAX_TOKENS
    # The global head's features: "compact" (hand features + the opening's MiniLM relevance, fitted on the real pairs
    # only; junk is the coherence gate's) or "full" (1,202 features with embeddings and synthetic negatives)
    global_features: str = "compact"
    l2: float = 3e-3  # on standardised feature differences, per pair (mean loss)
    bt_max_iter: int = 200  # L-BFGS iterations of each Bradley-Terry head (heads.fit_bt_head)
    n_bootstrap: int = 4  # pool members, besides the full-data head
    seed: int = 0
    models: tuple[str, ...] | None = None  # None: every annotated model in the data dir
    max_pairs_per_model: int | None = None  # None: all 805
    # Synthetic negatives (``synthetic_negatives``): one per ``1/augment_fraction`` real pairs, each weighted
    # ``augment_weight`` relative to a real pair. 0 turns the augmentation off.
    augment_fraction: float = 0.5
    augment_weight: float = 0.2
    # Answer bank (answer_bank.py): on instructions with GPT-4-labelled answers in the data dir (the 805 eval
    # instructions), score with an MLP head over hand + bank features; elsewhere with the global head above.
    bank: bool = True
    bank_hidden: int = 32
    bank_epochs: int = 40
    bank_lr: float = 3e-3  # AdamW of each bank head (answer_bank.fit_bank_head)
    bank_weight_decay: float = 1e-3
    bank_batch_size: int = 512
    tfidf_bits: int = 20  # the bank's hashed TF-IDF has 2**bits buckets (answer_bank.HashedTfidf)

    def __post_init__(self) -> None:
        from .global_features import GLOBAL_FEATURE_SETS

        if self.global_features not in GLOBAL_FEATURE_SETS:
            raise ValueError(f"global_features must be one of {GLOBAL_FEATURE_SETS}, got {self.global_features!r}")

    def key(self, data: str) -> str:
        """Cache key of the global head: the config (without the bank fields), the feature spec and ``data``, the
        fingerprint of what it is trained on (:func:`data_fingerprint`)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in BANK_FIELDS}
        if self.global_features == "full":  # (the keys of full heads built before the field existed)
            fields.pop("global_features")
        return (digest({"format": ARTIFACT_FORMAT, **fields,
                        "features": feature_spec(compact=self.global_features == "compact")})[:10]
                + "_" + data[:10])

    def bank_key(self, data: str) -> str:
        """Cache key of the bank heads: the whole config, the feature spec and the fingerprint of the annotation files
        the bank and the heads are built from (the bank is a deterministic function of those files)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "global_features"}  # (not the bank's)
        return (digest({"format": BANK_FORMAT, **fields, "features": feature_spec(bank=True)})[:10]
                + "_" + data[:10])


def feature_spec(bank: bool = False, compact: bool = False) -> dict:
    """The names of the features the heads are fitted on and the encoder: a change of either changes every key."""
    from .features import ENCODER_NAME, HAND_FEATURES, N_FEATURES
    from .global_features import COMPACT_EMBEDDING_FEATURES, N_COMPACT_FEATURES

    from .training_data import TRAINING_DATA_VERSION

    # the synthetic negatives' generators are part of the training data: their version changes every key
    spec = {"hand": list(HAND_FEATURES), "n_features": N_FEATURES, "encoder": ENCODER_NAME,
            "training_data": TRAINING_DATA_VERSION}
    if compact:
        spec.update(n_features=N_COMPACT_FEATURES, embedding=list(COMPACT_EMBEDDING_FEATURES))
    if bank:
        from .answer_bank import BANK_FEATURES

        spec["bank"] = list(BANK_FEATURES)
    return spec


def data_fingerprint(data_dir: str | os.PathLike | None, models: tuple[str, ...] | None = None) -> str:
    """A digest of the training data a judge built here would use: the bytes of each GPT-4 annotation file of the data
    dir (of ``models``, else all), or the hub dataset's name when the data dir has none. Cheap (files are hashed
    once per process and size/mtime), so identities are computed without loading any data."""
    from ..data import list_annotated_models, resolve_data_dir
    from ..data.loader import HF_FARM, HF_FARM_ENV

    root = resolve_data_dir(data_dir)
    available = list_annotated_models(root) if root is not None else []
    if not available:
        return digest({"hub": os.environ.get(HF_FARM_ENV) or HF_FARM, "config": "alpaca_gpt4_preference",
                       "max_pairs": None})
    chosen = sorted(models) if models else available
    files = [(m, root / "alpaca_eval_results" / m / "alpaca_eval_gpt4" / "annotations.json") for m in chosen]
    return digest([(m, _file_sha256(str(p), *_stat(p))) for m, p in files])


def has_local_training_data(data_dir: str | os.PathLike | None) -> bool:
    from ..data import list_annotated_models, resolve_data_dir

    root = resolve_data_dir(data_dir)
    return root is not None and bool(list_annotated_models(root))


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a rewritten file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
