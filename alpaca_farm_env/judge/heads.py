"""The global head: a Bradley-Terry linear head over hand features and frozen MiniLM embeddings, fitted on GPT-4's
labels (head 0 on all pairs, the others on bootstrap resamples: the pool members), cached as one ``.npz``. It scores
every instruction the answer bank does not cover (all training prompts)."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CorruptFileError
from ..utils import atomic_write, cache_dir
from . import files
from .config import JudgeConfig, data_fingerprint, has_local_training_data
from .features import EMBEDDING_FEATURES, HAND_FEATURES, N_FEATURES, MiniLMEncoder
from .global_features import COMPACT_EMBEDDING_FEATURES, N_COMPACT_FEATURES, global_features
from .files import _install_packaged, _load_cached, _reading_npz
from .training_data import labels, load_training_pairs, with_synthetic

logger = logging.getLogger(__name__)


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


def pair_features(encoder: MiniLMEncoder, rows: Sequence[dict], progress: bool = False,
                  feature_set: str = "compact") -> tuple[np.ndarray, np.ndarray]:
    """(phi(x, output_1), phi(x, output_2)) for each row, with the global head's ``feature_set``."""
    n = len(rows)
    ins = [r["instruction"] for r in rows] * 2
    inp = [r.get("input", "") or "" for r in rows] * 2
    outs = [r["output_1"] for r in rows] + [r["output_2"] for r in rows]
    f = global_features(encoder, ins, inp, outs, feature_set=feature_set, progress=progress)
    return f[:n], f[n:]


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
        n = art.heads.shape[1] if art.heads.ndim == 2 else -1
        if n not in (N_FEATURES, N_COMPACT_FEATURES) or art.scale.shape != (n,):
            raise CorruptFileError(path, f"judge artifact with heads of shape {art.heads.shape}, this version computes "
                                         f"{N_COMPACT_FEATURES} (compact) or {N_FEATURES} (full) features; rebuild it "
                                         "with `alpaca-farm judge train --force`")
        return art


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
    compact = config.global_features == "compact"
    # the compact head learns from real pairs only: junk is the coherence gate's, not the head's
    rows, base_weight = (real, np.ones(len(real))) if compact else with_synthetic(real, config)
    encoder = encoder or MiniLMEncoder(max_tokens=config.max_tokens)
    f1, f2 = pair_features(encoder, rows, progress=progress, feature_set=config.global_features)
    scale = feature_scale(f1[: len(real)], f2[: len(real)])  # real outputs only, as in the LOMO folds
    d = (f2 - f1) / scale
    y = labels(rows)
    heads = [fit_bt_head(d, y, config.l2, weight, max_iter=config.bt_max_iter)
             for _, weight in member_weights(config, base_weight, "fitting judge heads", progress)]
    models = sorted({r["model"] for r in rows})
    meta = {
        "config": dataclasses.asdict(config),
        "encoder": encoder.tag,
        "n_pairs": len(real),
        "n_synthetic": len(rows) - len(real),
        "models": models,
        "features": list(HAND_FEATURES) + list(COMPACT_EMBEDDING_FEATURES if compact else EMBEDDING_FEATURES),
        "source": "AlpacaEval-1 GPT-4 annotations (alpaca_eval_results/*/alpaca_eval_gpt4/annotations.json)"
        if models != ["alpaca_gpt4_preference"] else "hub tatsu-lab/alpaca_farm alpaca_gpt4_preference",
        "train_seconds": round(time.time() - t0, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return JudgeArtifact(scale=scale, heads=np.stack(heads), meta=meta)


def artifact_path(config: JudgeConfig, data: str) -> Path:
    """The cached global head for ``config`` trained on ``data`` (a :func:`~.config.data_fingerprint`)."""
    return cache_dir("judge", "artifacts") / f"distilled_{config.variant}_{config.key(data)}.npz"


def packaged_artifact(config: JudgeConfig, data: str | None = None) -> Path | None:
    """The prebuilt artifact shipped in the package for ``config`` and ``data`` (``None``: whatever data it was built
    from -- what a user without the GPT-4 annotation files gets), or ``None`` when there is none."""
    if data is not None:
        path = files.PACKAGED_ARTIFACTS / f"distilled_{config.variant}_{config.key(data)}.npz"
        return path if path.is_file() else None
    found = sorted(files.PACKAGED_ARTIFACTS.glob(f"distilled_{config.variant}_{config.key('')}*.npz"))
    return found[0] if found else None


def global_head_data(config: JudgeConfig, data_dir: str | os.PathLike | None) -> str:
    """The training data (fingerprint) of the global head this machine uses for ``config``: the data dir's GPT-4
    annotation files; without them, the data of the packaged head when one matches ``config``, else the hub pairs."""
    if not has_local_training_data(data_dir):
        shipped = packaged_artifact(config)
        if shipped is not None:
            return shipped.stem.rsplit("_", 1)[1]
    return data_fingerprint(data_dir, config.models)


def get_artifact(
    config: JudgeConfig | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    retrain: bool = False,
    encoder: MiniLMEncoder | None = None,
    progress: bool = True,
) -> tuple[JudgeArtifact, Path]:
    """Load the cached artifact for ``config`` and the data in force; else copy the packaged one; else train, cache
    and return it. The path's name is the head's identity (config, feature spec and training data)."""
    config = config or JudgeConfig()
    data = global_head_data(config, data_dir) if not retrain else data_fingerprint(data_dir, config.models)
    path = artifact_path(config, data)
    if not retrain:
        art = _load_cached(path, JudgeArtifact.load)  # an unreadable one is moved aside (warning) and rebuilt
        if art is not None:
            return art, path
        shipped = packaged_artifact(config, data)
        if shipped is not None:
            return _install_packaged(shipped, path, JudgeArtifact.load), path
    logger.info("training the distilled judge (%s variant); cached at %s", config.variant, path)
    art = train_artifact(config, data_dir, encoder=encoder, progress=progress)
    art.save(path)
    files.BUILD_COUNT += 1
    return art, path
