"""Benchmark configuration: dataclasses, preset files (``configs/tiny.yaml``, ``configs/paper.yaml``) and the eval subset.

A preset is a YAML file whose keys are the fields of :class:`BenchmarkConfig` (``generation`` holds those of
:class:`GenerationConfig`); copy one of the shipped presets (``alpaca-farm benchmark --preset tiny --print-config``)
and pass the copy's path to ``--preset``.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from ..utils import stable_hash

PRESETS = ("tiny", "paper")


@dataclass
class GenerationConfig:
    """Decoding for every method (a method's own entry may override a field, e.g. best_of_n's temperature 1.0).

    Paper defaults: temperature 0.7, top_p 1.0, 300 new tokens (AlpacaFarm Sec. 4 / App. D)."""

    max_new_tokens: int = 300
    temperature: float = 0.7
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0


@dataclass
class BenchmarkConfig:
    name: str = "custom"
    # policy spec for models.load_policy: "smollm2-135m", "tiny-llama", a local folder or a hub id; None = must be set
    policy: str | None = "smollm2-135m"
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    reference: str = "alpacafarm"  # Davinci003 reference set: "alpacafarm" (paper, A) or "alpacaeval1" (B)
    n_eval: int | None = None  # eval instructions (stratified by `dataset`); None = all 805
    subset_seed: int = 0
    annotator: str = "pooled"  # the evaluator
    annotator_kwargs: dict[str, Any] = field(default_factory=dict)
    annotator_seed: int = 0
    compare_to: str | None = None  # a method whose outputs are a second baseline column (tiny: "sft")
    methods: dict[str, dict[str, Any]] = field(default_factory=lambda: {"sft": {}, "best_of_n": {"n": 4}})
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    runs_root: str = "runs"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<config>") -> "BenchmarkConfig":
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
        data = dict(data)
        gen = data.pop("generation", None) or {}
        gen_known = {f.name for f in dataclasses.fields(GenerationConfig)}
        bad = sorted(set(gen) - gen_known)
        if bad:
            raise ValueError(f"{source}: unknown generation key(s) {bad}; known: {sorted(gen_known)}")
        methods = data.get("methods")
        if methods is not None:
            if isinstance(methods, list):  # a plain list of method names
                methods = {m: {} for m in methods}
            if not isinstance(methods, dict) or not all(isinstance(v, (dict, type(None))) for v in methods.values()):
                raise ValueError(f"{source}: 'methods' must map method names to keyword arguments")
            data["methods"] = {k: dict(v or {}) for k, v in methods.items()}
        for key in ("policy_kwargs", "annotator_kwargs"):
            if data.get(key) is None:
                data.pop(key, None)
        cfg = cls(**data, generation=GenerationConfig(**gen))
        if cfg.n_eval is not None and int(cfg.n_eval) < 1:
            raise ValueError(f"{source}: n_eval must be >= 1 (or null for all), got {cfg.n_eval}")
        return cfg


def preset_path(name_or_path: str | Path) -> Path:
    """The YAML file of a shipped preset name, or the given path."""
    p = Path(name_or_path)
    if str(name_or_path) in PRESETS:
        return Path(str(resources.files("alpaca_farm_env") / "configs" / f"{name_or_path}.yaml"))
    if p.is_file():
        return p
    raise FileNotFoundError(f"preset {str(name_or_path)!r} is neither one of {list(PRESETS)} nor a YAML file")


def load_preset(name_or_path: str | Path) -> BenchmarkConfig:
    import yaml

    path = preset_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    return BenchmarkConfig.from_dict(data, str(path))


def eval_subset(rows: Sequence[dict[str, Any]], n: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """A deterministic subset of ``n`` eval rows, stratified by ``dataset`` (largest-remainder allocation of the
    per-source counts); within a source, rows are ranked by a stable hash of (seed, instruction, input). Eval order
    is kept. ``n=None`` or ``n >= len(rows)`` returns all rows."""
    if n is None or n >= len(rows):
        return list(rows)
    counts = Counter(r["dataset"] for r in rows)
    total = len(rows)
    quota = {d: n * c / total for d, c in counts.items()}
    alloc = {d: int(q) for d, q in quota.items()}
    # hand out what is left by largest remainder, ties by name (deterministic)
    for d in sorted(quota, key=lambda d: (-(quota[d] - alloc[d]), d))[: n - sum(alloc.values())]:
        alloc[d] += 1
    chosen: set[int] = set()
    for d, k in alloc.items():
        idx = [i for i, r in enumerate(rows) if r["dataset"] == d]
        idx.sort(key=lambda i: stable_hash("eval_subset", seed, rows[i]["instruction"], rows[i]["input"]))
        chosen.update(idx[:k])
    return [r for i, r in enumerate(rows) if i in chosen]
