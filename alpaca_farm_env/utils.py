"""Small helpers shared across the package: stable hashing, cache dirs, seeding."""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def stable_hash(*parts: Any) -> int:
    """A 32-bit integer from an md5 of the parts; identical across processes (unlike the salted ``hash()``)."""
    text = "".join(str(p) for p in parts)
    return int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) % (2**32)


def random_seeded_choice(seed: Any, choices: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
    """Pick one of ``choices`` deterministically from a string seed.

    Same construction as alpaca_eval's ``utils.random_seeded_choice``: md5 of the seed string -> numpy Generator.
    """
    rng = np.random.default_rng(stable_hash(seed))
    p = None if weights is None else np.asarray(weights, dtype=float) / float(np.sum(weights))
    idx = rng.choice(len(choices), p=p)
    return list(choices)[int(idx)]


def digest(obj: Any) -> str:
    """sha256 hex digest of a JSON-serialisable object (sorted keys), for cache keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats (e.g. an undefined standard error) by None, recursively, for strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def cache_dir(*sub: str) -> Path:
    """Per-user cache dir: $ALPACA_FARM_CACHE, else $XDG_CACHE_HOME/alpaca_farm_env, else ~/.cache/alpaca_farm_env."""
    root = os.environ.get("ALPACA_FARM_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alpaca_farm_env"
    path = base.joinpath(*sub)
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # torch is a hard dependency, but keep data-only use importable
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write through a temp file and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
