"""``distilled_gpt4``: an offline pairwise judge distilled from real GPT-4 judgments, and the ``pooled`` /
``noisy_pooled`` pools built from it.

Model. A per-output score ``s(x, o) = w . phi(x, o)`` over the features of :mod:`.features` (hand features plus frozen
all-MiniLM-L6-v2 embeddings of the instruction and the output), and ``P(o2 beats o1) = sigmoid(s(x,o2) - s(x,o1))``:
a Bradley-Terry model, so swapping the outputs gives exactly ``1 - P``. The head is fitted with the Bradley-Terry
(logistic) loss and an L2 penalty on GPT-4's labels (draws as 0.5 targets).

Training data. The AlpacaEval-1 GPT-4 annotation files ``alpaca_eval_results/<model>/alpaca_eval_gpt4/
annotations.json`` of a local data dir (output_1 = text-davinci-003, output_2 = the model). Without a local data
dir, the hub dataset ``tatsu-lab/alpaca_farm`` config ``alpaca_gpt4_preference`` (through ``datasets``).

Artifact. One ``.npz`` holding the feature scales and ``1 + n_bootstrap`` heads: head 0 is fitted on all pairs, the
others on bootstrap resamples of the pairs with their own seed -- the members of ``pooled``/``noisy_pooled``. It is
cached under ``utils.cache_dir("judge", "artifacts")``; the package also ships a prebuilt one in
``alpaca_farm_env/artifacts/`` (see its README), used when the cache has none, so first use needs no training.

Variants: ``fast`` (the default, above) and ``best``, a fine-tuned MiniLM cross-encoder with the hand features in its
head (:mod:`.cross_encoder`; hours of CPU to build with ``alpaca-farm judge train --variant best``, never shipped).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CorruptFileError
from ..utils import atomic_write, cache_dir, digest, stable_hash
from .base import Annotation, check_lengths, register_annotator
from .answer_bank import BANK_FEATURES, AnswerBank, BankHeads, fit_bank_head
from .features import DEFAULT_MAX_TOKENS, HAND_FEATURES, N_FEATURES, MiniLMEncoder, build_features, full_prompt, hand_features

logger = logging.getLogger(__name__)

VARIANTS = ("fast", "best")  # fast: linear head over frozen MiniLM; best: fine-tuned cross-encoder (cross_encoder.py)
PACKAGED_ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARTIFACT_FORMAT = 1
BANK_FORMAT = 1
BANK_FIELDS = ("bank", "bank_hidden", "bank_epochs")


@dataclass
class JudgeConfig:
    """What determines a trained judge (its cache key)."""

    variant: str = "fast"
    max_tokens: int = DEFAULT_MAX_TOKENS
    l2: float = 3e-3  # on standardised feature differences, per pair (mean loss)
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

    def key(self) -> str:
        """Cache key of the global head (the bank fields are not part of it)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in BANK_FIELDS}
        return digest({"format": ARTIFACT_FORMAT, **fields})[:16]

    def bank_key(self, bank: AnswerBank) -> str:
        """Cache key of the bank heads: the whole config and the bank's content."""
        return digest({"format": BANK_FORMAT, **dataclasses.asdict(self), "bank": bank.key})[:16]


# ----------------------------------------------------------------------------------------------- data
def load_training_pairs(
    data_dir: str | os.PathLike | None = None,
    models: Sequence[str] | None = None,
    max_pairs_per_model: int | None = None,
) -> list[dict[str, Any]]:
    """GPT-4-labelled pairs with a ``model`` field; rows without a label are dropped.

    Local data dir: the AlpacaEval-1 GPT-4 annotation files. Hub: ``alpaca_gpt4_preference`` (``model`` = "hub").
    """
    from ..data import list_annotated_models, load_gpt4_annotations, load_preference, resolve_data_dir

    root = resolve_data_dir(data_dir)
    available = list_annotated_models(root) if root is not None else []
    rows: list[dict[str, Any]] = []
    if available:
        chosen = list(models) if models is not None else available
        unknown = sorted(set(chosen) - set(available))
        if unknown:
            raise ValueError(f"no GPT-4 annotations for {unknown} in {root}; available: {', '.join(available)}")
        for m in chosen:
            anns = [r for r in load_gpt4_annotations(m, root) if r["preference"] is not None]
            if max_pairs_per_model is not None:
                anns = anns[:max_pairs_per_model]
            rows += [{"instruction": r["instruction"], "input": r.get("input", ""), "output_1": r["output_1"],
                      "output_2": r["output_2"], "preference": float(r["preference"]), "model": m} for r in anns]
    else:
        # a user's machine without the annotation files: the hub's GPT-4 preference set (real `datasets` path)
        pref = load_preference("alpaca_gpt4_preference", root)
        if max_pairs_per_model is not None:
            pref = pref[:max_pairs_per_model]
        rows = [dict(r, model="alpaca_gpt4_preference") for r in pref if r["preference"] is not None]
    if not rows:
        raise ValueError("no GPT-4-labelled pairs to train the distilled judge on")
    return rows


def pair_features(encoder: MiniLMEncoder, rows: Sequence[dict], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(phi(x, output_1), phi(x, output_2)) for each row."""
    n = len(rows)
    ins = [r["instruction"] for r in rows] * 2
    inp = [r.get("input", "") or "" for r in rows] * 2
    outs = [r["output_1"] for r in rows] + [r["output_2"] for r in rows]
    f = build_features(encoder, ins, inp, outs, progress=progress)
    return f[:n], f[n:]


# ----------------------------------------------------------------------------------------------- augmentation
SYNTHETIC_KINDS = ("mismatched", "truncated", "repetitive", "template_echo", "near_empty")


def _words_prefix(text: str, n_words: int) -> str:
    """The text up to its ``n_words``-th word (keeps the original spacing and formatting)."""
    import re

    m = list(re.finditer(r"\S+", text))
    if n_words >= len(m):
        return text
    return text[: m[max(n_words, 1) - 1].end()] if m else ""


def degenerate_output(kind: str, row: dict, other: dict, key: str) -> str:
    """One degenerate answer to ``row``'s instruction, built from ``row``'s model output (``output_2``) and another
    row of the same model (``other``): the failure modes of a weak or base model that no annotated model shows.

    mismatched: the answer to a different instruction; truncated: cut mid-sentence after 15-45% of its words;
    repetitive: an opening phrase looped; template_echo: a short start followed by an echoed Alpaca prompt template
    and another instruction; near_empty: nothing or a few words.
    """
    o = row["output_2"].strip()
    h = stable_hash("synthetic", key)
    n = len(o.split())
    if kind == "mismatched":
        return other["output_2"]
    if kind == "truncated":
        cut = _words_prefix(o, max(3, int(n * (0.15 + 0.3 * (h % 100) / 100))))
        return cut.rstrip(" .!?;:)\"'`*")
    if kind == "repetitive":
        phrase = _words_prefix(o, 6 + h % 10).rstrip()
        return " ".join([phrase] * (3 + h % 6))
    if kind == "template_echo":
        start = _words_prefix(o, 8 + h % 20)
        return (f"{start}\n\n### Instruction:\n{other['instruction']}\n\n### Response:\n"
                f"{_words_prefix(other['output_2'], 10 + h % 30)}")
    if kind == "near_empty":
        return _words_prefix(o, h % 4)  # 0 words: the empty answer
    raise ValueError(f"unknown synthetic kind {kind!r}; one of {SYNTHETIC_KINDS}")


def synthetic_negatives(rows: Sequence[dict], fraction: float, seed: int = 0) -> list[dict]:
    """Degenerate answers GPT-4 would certainly rank below the davinci003 reference, labelled as reference wins.

    The annotated models are all fluent (the weakest, phi-2, wins 31% against davinci003), so a head fitted on them
    alone never sees incoherent, off-topic, looping, template-echoing or cut-off text and rates it like any other
    short answer. About ``fraction * len(rows)`` rows are chosen by a stable hash of (seed, model, instruction); each
    gets one kind, again by stable hash, built from the same model's outputs only, so a leave-one-model-out fold can
    drop the held-out model's synthetic rows with its real ones. Rows carry ``model``, ``synthetic`` = kind and
    ``preference`` = 1.0 (output_1 = the reference wins).
    """
    if fraction <= 0:
        return []
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    out = []
    for m, rs in by_model.items():
        if len(rs) < 2:
            continue
        for i, r in enumerate(rs):
            key = f"{seed}|{m}|{r['instruction']}|{r.get('input', '')}"
            h = stable_hash("pick", key)
            if (h % 10_000) / 10_000 >= fraction:
                continue
            kind = SYNTHETIC_KINDS[stable_hash("kind", key) % len(SYNTHETIC_KINDS)]
            other = rs[(i + 1 + stable_hash("other", key) % (len(rs) - 1)) % len(rs)]  # never the row itself
            o2 = degenerate_output(kind, r, other, key)
            if o2 == r["output_1"]:
                continue
            out.append({"instruction": r["instruction"], "input": r.get("input", ""), "output_1": r["output_1"],
                        "output_2": o2, "preference": 1.0, "model": m, "synthetic": kind})
    return out


def with_synthetic(rows: Sequence[dict], config: "JudgeConfig") -> tuple[list[dict], np.ndarray]:
    """``rows`` + their synthetic negatives, and per-row base weights (1 real, ``config.augment_weight`` synthetic)."""
    syn = synthetic_negatives(rows, config.augment_fraction, config.seed) if config.augment_weight > 0 else []
    weights = np.concatenate([np.ones(len(rows)), np.full(len(syn), float(config.augment_weight))])
    return list(rows) + syn, weights


# ----------------------------------------------------------------------------------------------- fitting
def feature_scale(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Per-feature scale: std over all outputs (differences cancel any offset, so no centring is needed)."""
    s = np.concatenate([f1, f2]).std(0)
    return np.where(s > 1e-6, s, 1.0).astype(np.float32)


def fit_bt_head(
    d: np.ndarray, y: np.ndarray, l2: float, sample_weight: np.ndarray | None = None, max_iter: int = 200
) -> np.ndarray:
    """Bradley-Terry head: minimise mean weighted BCE(sigmoid(d @ w), y) + l2/2 |w|^2, no intercept (symmetry)."""
    import torch

    X = torch.as_tensor(d, dtype=torch.float64)
    Y = torch.as_tensor(y, dtype=torch.float64)
    W = torch.ones_like(Y) if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float64)
    W = W / W.sum()
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (W * torch.nn.functional.binary_cross_entropy_with_logits(X @ w, Y, reduction="none")).sum()
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float32)


def labels(rows: Sequence[dict]) -> np.ndarray:
    """GPT-4 preference (1, 1.5, 2 or a float in between) -> P(output_2 better)."""
    return np.asarray([float(r["preference"]) - 1.0 for r in rows], dtype=np.float64)


# ----------------------------------------------------------------------------------------------- artifact files
# What np.load and the reads of an .npz raise for a truncated or garbage file (missing array: KeyError; bad meta JSON
# or a pickled file: ValueError; bad CRC: BadZipFile; an empty file: EOFError). OSError (permissions, a directory) is
# not corruption and propagates.
_NPZ_ERRORS = (ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


@contextlib.contextmanager
def _reading_npz(path: Path, what: str):
    """``np.load(path)``; any error of an unreadable file (while loading or reading arrays) -> CorruptFileError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z
    except _NPZ_ERRORS as e:
        raise CorruptFileError(path, f"not a readable {what} (truncated or not an .npz: {type(e).__name__}: {e})") from e


def move_aside(path: Path, err: Exception) -> Path:
    """Rename an unreadable cache file to ``<name>.corrupt`` (replacing an older one), with a warning naming it."""
    aside = path.with_name(path.name + ".corrupt")
    logger.warning("%s; moved it aside to %s and rebuilding it", err, aside)
    with contextlib.suppress(FileNotFoundError):  # another process moved it first
        os.replace(path, aside)
    return aside


def _load_cached(path: Path, load: Callable[[Path], Any]) -> Any | None:
    """``load(path)`` of a cached artifact; ``None`` when there is none or it was unreadable (then moved aside)."""
    if not path.is_file():
        return None
    try:
        return load(path)
    except CorruptFileError as e:
        move_aside(path, e)
        return None


def _load_packaged(path: Path, load: Callable[[Path], Any]) -> Any:
    """``load(path)`` of an artifact shipped in the package: never moved or rebuilt, an unreadable one is an error."""
    try:
        return load(path)
    except CorruptFileError as e:
        detail = str(e).removeprefix(f"{path}: ")
        raise CorruptFileError(path, f"the artifact shipped with the package is unreadable ({detail}); reinstall the "
                                     "package (pip install --force-reinstall alpaca-farm-env, or `git checkout` the "
                                     "file in a source checkout), or build your own with `alpaca-farm judge train "
                                     "--force`") from e


def _install_packaged(shipped: Path, path: Path, load: Callable[[Path], Any]) -> Any:
    """Check the shipped artifact loads, then copy it to the cache path ``path``; returns it loaded."""
    art = _load_packaged(shipped, load)
    with open(shipped, "rb") as src:
        atomic_write(path, lambda f: shutil.copyfileobj(src, f))
    return art


@dataclass
class JudgeArtifact:
    scale: np.ndarray
    heads: np.ndarray  # (1 + n_bootstrap, n_features)
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        atomic_write(Path(path), lambda f: np.savez_compressed(
            f, scale=self.scale.astype(np.float32), heads=self.heads.astype(np.float32),
            meta=np.asarray(json.dumps(self.meta, sort_keys=True))))

    @classmethod
    def load(cls, path: Path) -> "JudgeArtifact":
        """Raises :class:`CorruptFileError` naming ``path`` when it is not a readable artifact of this version."""
        with _reading_npz(path, "judge artifact") as z:
            art = cls(scale=z["scale"], heads=z["heads"], meta=json.loads(str(z["meta"])))
        if art.heads.ndim != 2 or art.heads.shape[1] != N_FEATURES or art.scale.shape != (N_FEATURES,):
            raise CorruptFileError(path, f"judge artifact with heads of shape {art.heads.shape}, this version computes "
                                         f"{N_FEATURES} features; rebuild it with `alpaca-farm judge train --force`")
        return art


def member_weights(config: JudgeConfig, base_weight: np.ndarray, desc: str, progress: bool):
    """Yield ``(h, per-row weights)``: head 0 on all pairs, then the ``n_bootstrap`` pool members, each a bootstrap
    resample (seed ``1000*seed + h``) expressed as multiplicities -- same features, its own data subset."""
    iterator = range(1 + config.n_bootstrap)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=desc, unit="head")
    n = len(base_weight)
    for h in iterator:
        if h == 0:
            yield h, base_weight
        else:
            rng = np.random.default_rng(config.seed * 1000 + h)
            yield h, base_weight * np.bincount(rng.integers(0, n, n), minlength=n)


def train_artifact(
    config: JudgeConfig,
    data_dir: str | os.PathLike | None = None,
    encoder: MiniLMEncoder | None = None,
    progress: bool = True,
    rows: Sequence[dict] | None = None,
) -> JudgeArtifact:
    """Fit the full-data head and ``config.n_bootstrap`` bootstrap heads (pool members) on GPT-4's labels."""
    if config.variant != "fast":
        raise ValueError(f"train_artifact builds the 'fast' variant; 'best' is cross_encoder.train_best, got {config.variant!r}")
    t0 = time.time()
    real = list(rows) if rows is not None else load_training_pairs(data_dir, config.models, config.max_pairs_per_model)
    rows, base_weight = with_synthetic(real, config)
    encoder = encoder or MiniLMEncoder(max_tokens=config.max_tokens)
    f1, f2 = pair_features(encoder, rows, progress=progress)
    scale = feature_scale(f1[: len(real)], f2[: len(real)])  # real outputs only, as in the LOMO folds
    d = (f2 - f1) / scale
    y = labels(rows)
    heads = [fit_bt_head(d, y, config.l2, weight)
             for _, weight in member_weights(config, base_weight, "fitting judge heads", progress)]
    models = sorted({r["model"] for r in rows})
    meta = {
        "config": dataclasses.asdict(config),
        "encoder": encoder.tag,
        "n_pairs": len(real),
        "n_synthetic": len(rows) - len(real),
        "models": models,
        "features": list(HAND_FEATURES) + ["cos(x,o)", "e(o)[384]", "e(x)*e(o)[384]", "e(x)*log_words(o)[384]"],
        "source": "AlpacaEval-1 GPT-4 annotations (alpaca_eval_results/*/alpaca_eval_gpt4/annotations.json)"
        if models != ["alpaca_gpt4_preference"] else "hub tatsu-lab/alpaca_farm alpaca_gpt4_preference",
        "train_seconds": round(time.time() - t0, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return JudgeArtifact(scale=scale, heads=np.stack(heads), meta=meta)


BUILD_COUNT = 0  # number of artifacts trained in this process (tests check that a cached one is reused)


def artifact_path(config: JudgeConfig) -> Path:
    return cache_dir("judge", "artifacts") / f"distilled_{config.variant}_{config.key()}.npz"


def packaged_artifact(config: JudgeConfig) -> Path | None:
    """The prebuilt artifact shipped in the package, when it was built with exactly ``config``."""
    path = PACKAGED_ARTIFACTS / f"distilled_{config.variant}_{config.key()}.npz"
    return path if path.is_file() else None


def get_artifact(
    config: JudgeConfig | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    retrain: bool = False,
    encoder: MiniLMEncoder | None = None,
    progress: bool = True,
) -> tuple[JudgeArtifact, Path]:
    """Load the cached artifact for ``config``; else copy the packaged one; else train, cache and return it."""
    global BUILD_COUNT
    config = config or JudgeConfig()
    path = artifact_path(config)
    if not retrain:
        art = _load_cached(path, JudgeArtifact.load)  # an unreadable one is moved aside (warning) and rebuilt
        if art is not None:
            return art, path
        shipped = packaged_artifact(config)
        if shipped is not None:
            return _install_packaged(shipped, path, JudgeArtifact.load), path
    logger.info("training the distilled judge (%s variant); cached at %s", config.variant, path)
    art = train_artifact(config, data_dir, encoder=encoder, progress=progress)
    art.save(path)
    BUILD_COUNT += 1
    return art, path


# ----------------------------------------------------------------------------------------------- answer bank
_BANKS: dict[tuple, AnswerBank] = {}


def load_bank(
    data_dir: str | os.PathLike | None = None,
    models: Sequence[str] | None = None,
    max_pairs_per_model: int | None = None,
) -> AnswerBank | None:
    """The answer bank of the local data dir's GPT-4 annotation files (one per process and selection), or ``None``
    when there are none (e.g. on the hub only: its ``alpaca_gpt4_preference`` pairs have no shared reference)."""
    from ..data import list_annotated_models, resolve_data_dir

    root = resolve_data_dir(data_dir)
    if root is None or not list_annotated_models(root):
        return None
    key = (str(root), tuple(models) if models else None, max_pairs_per_model)
    if key not in _BANKS:
        _BANKS[key] = AnswerBank(load_training_pairs(root, models, max_pairs_per_model))
    return _BANKS[key]


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
    parts = [fit_bank_head(X1, X2, y, weight, mu, scale, hidden=config.bank_hidden, epochs=config.bank_epochs,
                           seed=config.seed * 1000 + h)
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


def bank_artifact_path(config: JudgeConfig, bank: AnswerBank) -> Path:
    return cache_dir("judge", "artifacts") / f"distilled_bank_{config.bank_key(bank)}.npz"


def get_bank_heads(
    config: JudgeConfig,
    bank: AnswerBank,
    *,
    retrain: bool = False,
    progress: bool = True,
) -> tuple[BankArtifact, Path]:
    """Cached bank heads for (config, bank); else the packaged ones if they match; else trained (about a minute)."""
    global BUILD_COUNT
    path = bank_artifact_path(config, bank)
    if not retrain:
        art = _load_cached(path, BankArtifact.load)  # an unreadable one is moved aside (warning) and rebuilt
        if art is not None:
            return art, path
        shipped = PACKAGED_ARTIFACTS / path.name
        if shipped.is_file():
            return _install_packaged(shipped, path, BankArtifact.load), path
    logger.info("training the distilled judge's bank heads; cached at %s", path)
    art = train_bank_heads(config, bank, bank.rows, progress=progress)  # the pairs the bank holds, not read again
    art.save(path)
    BUILD_COUNT += 1
    return art, path


# ----------------------------------------------------------------------------------------------- the judge
def config_for_variant(variant: str):
    """The default config of a judge variant: ``fast`` (frozen encoder + head) or ``best`` (fine-tuned encoder)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown judge variant {variant!r}; one of {VARIANTS}")
    if variant == "best":
        from .cross_encoder import CrossEncoderConfig

        return CrossEncoderConfig()
    return JudgeConfig(variant=variant)


@register_annotator("distilled_gpt4")
class DistilledJudge:
    """Offline GPT-4 judge: ``compare`` (pairwise protocol) and ``annotate(rows)`` (pool-member protocol).

    ``probability`` = P(output_2 better) = sigmoid(s(x, o2) - s(x, o1)); ``preference`` 2 if it is above 0.5, 1 if
    below, 1.5 if equal (identical outputs always give exactly 0.5). ``head`` picks one of the artifact's heads
    (0 = full data; 1.. = bootstrap members). Deterministic: ``seed`` is accepted for the protocol and ignored.

    ``bank`` (fast variant): on instructions the data dir's answer bank covers (the 805 eval instructions), pairs are
    scored by the bank heads over hand + bank features (answer_bank.py); other instructions by the global head.
    ``bank=False`` uses the global head everywhere; an :class:`AnswerBank` instance is used as given.
    ``bank_holdout=True`` hides each pair's own outputs from the bank (their GPT-4 label, if banked, is not read
    back): for measuring the judge on banked pairs, as ``annotators analyze`` does.
    """

    cost_per_annotation = 0.0  # local CPU only

    def __init__(
        self,
        variant: str = "fast",
        *,
        head: int = 0,
        name: str | None = None,
        data_dir: str | os.PathLike | None = None,
        config: "JudgeConfig | CrossEncoderConfig | None" = None,
        artifact: "JudgeArtifact | BestJudgeModel | None" = None,
        encoder: MiniLMEncoder | None = None,
        bank: "bool | AnswerBank" = True,
        bank_artifact: BankArtifact | None = None,
        bank_holdout: bool = False,
        progress: bool = False,
    ):
        from .cross_encoder import BestJudgeModel, CrossEncoderConfig, get_best_model

        config = config if config is not None else config_for_variant(variant)
        self.config = config
        self.variant = "best" if isinstance(config, CrossEncoderConfig) else config.variant
        self.progress = progress
        if self.variant == "best":
            # fine-tuned cross-encoder (annotators/cross_encoder.py); built on first use, cached per machine
            self.best = artifact if isinstance(artifact, BestJudgeModel) else get_best_model(config, data_dir, progress=progress)
            n_heads = self.best.heads.shape[0]
        else:
            self.best = None
            self.encoder = encoder or MiniLMEncoder(max_tokens=self.config.max_tokens)
            if artifact is None:
                artifact, _ = get_artifact(self.config, data_dir, encoder=self.encoder, progress=progress)
            self.artifact = artifact
            n_heads = artifact.heads.shape[0]
        if not 0 <= head < n_heads:
            raise ValueError(f"head {head} out of range: the artifact has {n_heads} heads")
        self.head = head
        self.bank_holdout = bank_holdout
        self.bank: AnswerBank | None = None
        self.bank_artifact: BankArtifact | None = None
        if self.best is None:
            self.w = artifact.heads[head] / artifact.scale
            if bank is not False and self.config.bank:
                self.bank = bank if isinstance(bank, AnswerBank) else load_bank(
                    data_dir, self.config.models, self.config.max_pairs_per_model)
            if self.bank is not None:
                self.bank_artifact = bank_artifact or get_bank_heads(self.config, self.bank, progress=progress)[0]
                if self.bank_artifact.heads.W1.shape[0] != n_heads:
                    raise ValueError(f"bank heads ({self.bank_artifact.heads.W1.shape[0]}) and global heads ({n_heads}) "
                                     "disagree; rebuild with `alpaca-farm judge train --force`")
        self.name = name or ("distilled_gpt4" if head == 0 else f"distilled_gpt4_h{head}")

    def scores(
        self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
        exclude_texts: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:
        """Per-output scores s(x, o) (float64); ``exclude_texts[i]``: banked answers output ``i`` must not see."""
        if self.best is not None:
            return self.best.scores(list(instructions), [x or "" for x in inputs], list(outputs), head=self.head,
                                    progress=self.progress)
        instructions, outputs = list(instructions), list(outputs)
        inputs = [x or "" for x in inputs]
        s = np.zeros(len(outputs), np.float64)
        banked = np.asarray([self.bank is not None and self.bank.has(i, x) for i, x in zip(instructions, inputs)], bool)
        for idx, use_bank in ((np.flatnonzero(banked), True), (np.flatnonzero(~banked), False)):
            if not len(idx):
                continue
            sub = ([instructions[k] for k in idx], [inputs[k] for k in idx], [outputs[k] for k in idx])
            if use_bank:
                ex = [exclude_texts[k] for k in idx] if exclude_texts is not None else None
                s[idx] = self.bank_artifact.heads.scores(banked_features(self.bank, *sub, exclude_texts=ex), self.head)
            else:
                f = build_features(self.encoder, *sub, progress=self.progress)
                s[idx] = f.astype(np.float64) @ self.w.astype(np.float64)
        return s

    def uses_bank(self, instruction: str, inp: str = "") -> bool:
        """Whether pairs on this instruction are scored by the bank heads (else by the global head)."""
        return self.bank is not None and self.bank.has(instruction, inp or "")

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed: int = 0) -> list[Annotation]:
        n = check_lengths(instructions, inputs, outputs_1, outputs_2)
        if n == 0:
            return []
        ex = None
        if self.bank_holdout:  # the same exclusion for both outputs of a pair keeps the order symmetry exact
            ex = [(a, b) for a, b in zip(outputs_1, outputs_2)] * 2
        s = self.scores(list(instructions) * 2, list(inputs) * 2, list(outputs_1) + list(outputs_2), exclude_texts=ex)
        out = []
        for i in range(n):
            diff = 0.0 if outputs_1[i] == outputs_2[i] else float(s[n + i] - s[i])
            p = float(1.0 / (1.0 + np.exp(-diff)))
            pref = 2.0 if diff > 0 else (1.0 if diff < 0 else 1.5)
            extra = {"score_1": float(s[i]), "score_2": float(s[n + i])}
            if self.best is None:
                extra["scored_by"] = "bank" if self.uses_bank(instructions[i], inputs[i]) else "global"
            out.append(Annotation(preference=pref, probability=p, annotator=self.name, cost=0.0, extra=extra))
        return out

    def annotate(self, rows: list[dict]) -> list[Annotation]:
        """Pool-member protocol: rows with instruction, input, output_1, output_2 in the presented order."""
        return self.compare([r["instruction"] for r in rows], [r.get("input", "") or "" for r in rows],
                            [r["output_1"] for r in rows], [r["output_2"] for r in rows])


def _distilled_members(
    config, n_members: int | None, data_dir, progress: bool, bank: bool = True, bank_holdout: bool = False
) -> list[DistilledJudge]:
    from .cross_encoder import CrossEncoderConfig, get_best_model

    bank_obj, bank_art = False, None
    if isinstance(config, CrossEncoderConfig):
        artifact = get_best_model(config, data_dir, progress=progress)  # one encoder + score cache for all members
        n_heads, encoder = artifact.heads.shape[0] - 1, None
    else:
        encoder = MiniLMEncoder(max_tokens=config.max_tokens)  # shared: one encoder in memory for all members
        artifact, _ = get_artifact(config, data_dir, encoder=encoder, progress=progress)
        n_heads = artifact.heads.shape[0] - 1
        if bank and config.bank:  # shared too: one bank and one set of bank heads for all members
            bank_obj = load_bank(data_dir, config.models, config.max_pairs_per_model) or False
            if bank_obj is not False:
                bank_art = get_bank_heads(config, bank_obj, progress=progress)[0]
    if n_heads < 1:
        raise ValueError("the judge artifact has no bootstrap heads to pool (n_bootstrap=0)")
    k = n_heads if n_members is None else n_members
    if not 1 <= k <= n_heads:
        raise ValueError(f"n_members must lie in [1, {n_heads}], got {n_members}")
    return [DistilledJudge(config=config, artifact=artifact, encoder=encoder, head=h, progress=progress,
                           bank=bank_obj, bank_artifact=bank_art, bank_holdout=bank_holdout)
            for h in range(1, k + 1)]


def _pool_base():
    from .pool import AnnotatorPool

    return AnnotatorPool


class DistilledPool(_pool_base()):
    """An :class:`~.pool.AnnotatorPool` of the judge artifact's bootstrap heads (each its own seed and data subset).

    Exactly the pool semantics of :mod:`.pool` (member choice, output-order randomisation, label noise, draws,
    dedup); the members are :class:`DistilledJudge` instances sharing one encoder and one embedding cache.
    """

    default_name = "distilled_pool"
    default_p_label_flip: float | None = None

    def __init__(
        self,
        *,
        p_label_flip: float | None = -1.0,
        variant: str = "fast",
        n_members: int | None = None,
        base_seed: int = 0,
        data_dir: str | os.PathLike | None = None,
        config: JudgeConfig | None = None,
        name: str | None = None,
        bank: bool = True,
        bank_holdout: bool = False,
        progress: bool = False,
    ):
        config = config if config is not None else config_for_variant(variant)
        members = _distilled_members(config, n_members, data_dir, progress, bank=bank, bank_holdout=bank_holdout)
        p = self.default_p_label_flip if p_label_flip == -1.0 else p_label_flip
        super().__init__(members, name=name or self.default_name, p_label_flip=p, is_randomize_output_order=True,
                         base_seed=base_seed)


@register_annotator("pooled")
class PooledJudge(DistilledPool):
    """Evaluation default: the distilled pool without label noise (AlpacaFarm evaluates with the noise-free pool)."""

    default_name = "pooled"
    default_p_label_flip = None


@register_annotator("noisy_pooled")
class NoisyPooledJudge(DistilledPool):
    """Training default: the same pool with p_label_flip=0.25, AlpacaFarm's training-time label noise (the noisy
    pool of the paper; semantics and reference-code citations in :mod:`.pool` and docs/annotators.md)."""

    default_name = "noisy_pooled"
    default_p_label_flip = 0.25


# ----------------------------------------------------------------------------------------------- evaluation
MID_RANGE = (20.0, 60.0)  # GPT-4 win-rates where length alone is a poor judge (issue 3 target)


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y on x."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(slope), float(intercept)


def _logit(wr: Sequence[float] | np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(wr, float) / 100.0, 0.005, 0.995)
    return np.log(q / (1.0 - q))


def cross_fitted_calibration(pred: dict[str, float], target: dict[str, float]) -> dict[str, float]:
    """Calibrated win-rate per model from a line fitted on the *other* models (never in-sample).

    The line maps logit(predicted win-rate) to logit(GPT-4 win-rate): win-rates are bounded, and on the 21 models a
    logit line cross-fits better than a straight line in percent (judge MAE 8.2 vs 9.0 points).
    """
    out = {}
    for m in pred:
        others = [o for o in pred if o != m]
        if len(others) < 2:
            out[m] = pred[m]
            continue
        slope, intercept = _fit_line(_logit([pred[o] for o in others]), _logit([target[o] for o in others]))
        out[m] = float(100.0 / (1.0 + np.exp(-(slope * _logit([pred[m]])[0] + intercept))))
    return out


def _agreement(judge_pref: np.ndarray, gpt4_pref: np.ndarray) -> tuple[float, int]:
    """Agreement on GPT-4's non-draw rows; a judge draw counts one half."""
    mask = (gpt4_pref == 1.0) | (gpt4_pref == 2.0)
    if not mask.any():
        return float("nan"), 0
    j, g = judge_pref[mask], gpt4_pref[mask]
    return float(np.mean(np.where(j == 1.5, 0.5, (j == g).astype(float)))), int(mask.sum())


def _summary(per_model: dict[str, dict], key: str) -> dict[str, float]:
    from scipy.stats import spearmanr

    models = list(per_model)
    gpt4 = np.asarray([per_model[m]["gpt4_win_rate"] for m in models])
    pred = np.asarray([per_model[m][key] for m in models])
    rho = float(spearmanr(pred, gpt4).statistic) if len(models) >= 3 else float("nan")
    return {"mae": float(np.mean(np.abs(pred - gpt4))), "spearman": rho}


def evaluate_lomo(
    data_dir: str | os.PathLike | None = None,
    config: JudgeConfig | None = None,
    *,
    models: Sequence[str] | None = None,
    max_pairs_per_model: int | None = None,
    heads: Sequence[str] = ("bank", "global"),
    progress: bool = True,
) -> dict[str, Any]:
    """Leave-one-model-out fidelity to GPT-4 over the annotated models, with the "longer wins" baseline beside it.

    For each model, the judge is rebuilt without that model and judges its pairs. ``heads``: ``bank`` = the bank
    heads (how the judge scores the eval instructions; the held-out model's answers leave the bank too, and every
    training pair sees the bank without its own model), ``global`` = the global head alone (how it scores any other
    instruction). Reported per model and overall: per-pair agreement on GPT-4's non-draw rows, win-rate vs
    davinci003 (hard labels, as the benchmark computes it; ``metrics.win_rate``), its cross-fitted logit
    calibration, MAE against GPT-4's win-rate and Spearman over models. ``judge`` = the first of ``heads``.
    """
    from ..metrics import win_rate

    heads = tuple(heads)
    if not heads or set(heads) - {"bank", "global"}:
        raise ValueError(f"heads must be a non-empty subset of ('bank', 'global'), got {heads!r}")
    config = config or JudgeConfig()
    models = list(models) if models is not None else list(config.models or []) or None
    rows = load_training_pairs(data_dir, models, max_pairs_per_model or config.max_pairs_per_model)
    by_model: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_model.setdefault(r["model"], []).append(i)
    if len(by_model) < 2:
        raise ValueError("leave-one-model-out evaluation needs GPT-4 annotations of at least 2 models")
    n = len(rows)
    # synthetic negatives enter training folds only: built per model, dropped with the held-out model, never judged
    all_rows, base_weight = with_synthetic(rows, config)
    row_model = np.asarray([r["model"] for r in all_rows], dtype=object)
    y_all = labels(all_rows)
    gpt4_pref = np.asarray([float(r["preference"]) for r in rows])
    same = np.asarray([r["output_1"] == r["output_2"] for r in rows])
    len1 = np.asarray([len(r["output_1"]) for r in rows])
    len2 = np.asarray([len(r["output_2"]) for r in rows])
    prefs = {"longer": np.where(len2 > len1, 2.0, np.where(len2 < len1, 1.0, 1.5))}

    def folds(desc):
        it = list(by_model)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=desc, unit="model")
        return it

    def hard(diff, idx):
        diff = np.where(same[idx], 0.0, diff)
        return np.where(diff > 0, 2.0, np.where(diff < 0, 1.0, 1.5))

    if "bank" in heads:
        bank = AnswerBank(rows)
        ins = [r["instruction"] for r in all_rows]
        inp = [r.get("input", "") or "" for r in all_rows]
        q1 = bank.query(ins, inp, [r["output_1"] for r in all_rows])  # similarities once; exclusions per fold
        q2 = bank.query(ins, inp, [r["output_2"] for r in all_rows])
        prompts = [full_prompt(i, x) for i, x in zip(ins, inp)]
        H1 = np.stack([hand_features(p_, r["output_1"]) for p_, r in zip(prompts, all_rows)])
        H2 = np.stack([hand_features(p_, r["output_2"]) for p_, r in zip(prompts, all_rows)])
        pref = np.full(n, np.nan)
        for m in folds("leave-one-model-out (bank heads)"):
            exclude = [(r["model"], m) for r in all_rows]
            X1 = np.concatenate([H1, bank.features(q1, exclude)], axis=1)
            X2 = np.concatenate([H2, bank.features(q2, exclude)], axis=1)
            test = np.asarray(by_model[m])
            train = np.flatnonzero(row_model != m)
            real_train = train[train < n]
            mu, scale = _bank_stats(X1[real_train], X2[real_train])
            W1, b1, W2, wlin = fit_bank_head(X1[train], X2[train], y_all[train], base_weight[train], mu, scale,
                                             hidden=config.bank_hidden, epochs=config.bank_epochs, seed=config.seed * 1000)
            bh = BankHeads(mu=mu, scale=scale, W1=W1[None], b1=b1[None], W2=W2[None], wlin=wlin[None])
            pref[test] = hard(bh.scores(X2[test], 0) - bh.scores(X1[test], 0), test)
        prefs["bank"] = pref
    if "global" in heads:
        encoder = MiniLMEncoder(max_tokens=config.max_tokens)
        syn_model = row_model[n:]
        f1_all, f2_all = pair_features(encoder, all_rows, progress=progress)
        f1, f2 = f1_all[:n], f2_all[:n]
        pref = np.full(n, np.nan)
        for m in folds("leave-one-model-out (global head)"):
            test = np.asarray(by_model[m])
            train = np.setdiff1d(np.arange(n), test)
            scale = feature_scale(f1[train], f2[train])
            train = np.concatenate([train, n + np.flatnonzero(syn_model != m)]).astype(int)
            w = fit_bt_head((f2_all[train] - f1_all[train]) / scale, y_all[train], config.l2, base_weight[train])
            pref[test] = hard(((f2[test] - f1[test]) / scale) @ w, test)
        prefs["global"] = pref
    prefs["judge"] = prefs[heads[0]]
    keys = ["judge"] + [h for h in heads] + ["longer"]

    per_model: dict[str, dict[str, Any]] = {}
    for m, idx in by_model.items():
        idx = np.asarray(idx)
        per_model[m] = {"n": int(len(idx)), "gpt4_win_rate": win_rate(gpt4_pref[idx])["win_rate"]}
        for key in keys:
            per_model[m][f"{key}_win_rate"] = win_rate(prefs[key][idx])["win_rate"]
            per_model[m][f"{key}_agreement"] = _agreement(prefs[key][idx], gpt4_pref[idx])[0]
    target = {m: v["gpt4_win_rate"] for m, v in per_model.items()}
    for key in keys:
        cal = cross_fitted_calibration({m: v[f"{key}_win_rate"] for m, v in per_model.items()}, target)
        for m in per_model:
            per_model[m][f"{key}_calibrated_win_rate"] = cal[m]
    mid = [m for m, v in per_model.items() if MID_RANGE[0] <= v["gpt4_win_rate"] <= MID_RANGE[1]]
    mid_idx = np.concatenate([np.asarray(by_model[m]) for m in mid]) if mid else np.asarray([], int)
    summary: dict[str, Any] = {}
    for key in keys:
        raw = _summary(per_model, f"{key}_win_rate")
        cal = _summary(per_model, f"{key}_calibrated_win_rate")
        summary[key] = {
            "agreement": _agreement(prefs[key], gpt4_pref)[0],
            "agreement_mid": _agreement(prefs[key][mid_idx], gpt4_pref[mid_idx])[0] if mid else float("nan"),
            "mae": raw["mae"], "spearman": raw["spearman"],
            "mae_calibrated": cal["mae"], "spearman_calibrated": cal["spearman"],
        }
    all_models = list(per_model)
    line = _fit_line(_logit([per_model[m]["judge_win_rate"] for m in all_models]), _logit([target[m] for m in all_models]))
    return {
        "protocol": "leave-one-model-out over the AlpacaEval-1 GPT-4-annotated models; win-rates vs text-davinci-003",
        "config": dataclasses.asdict(config),
        "heads": list(heads),
        "n_pairs": len(rows),
        "n_synthetic": len(all_rows) - len(rows),
        "models": all_models,
        "mid_range_models": mid,
        "summary": summary,
        "per_model": per_model,
        "calibration_logit_line_all_models": {"slope": line[0], "intercept": line[1]},
    }
