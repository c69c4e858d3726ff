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

from ..errors import ConfigError, DataNotFoundError
from ..utils import stable_hash

PRESETS = ("tiny", "cpu_all", "paper")


@dataclass
class GenerationConfig:
    """The benchmark's evaluation decoding: how the eval-split answers of the methods that answer by plain sampling
    (base, sft, and the methods whose answer is one sample of the policy they trained: FeedME, reward conditioning,
    DPO, PPO, Quark, expert iteration) are sampled. A method's own sampling is never overridden: an agent takes only
    the fields its class names in ``GENERATION_KEYS`` (best-of-n names ``max_new_tokens``, ``batch_size`` and
    ``seed``; its n, temperature and top_p are its candidates' and come from its own settings), and a method's
    entry in the preset may still set any of them for that method alone.

    Paper defaults: temperature 0.7, top_p 1.0, 300 new tokens (AlpacaFarm Sec. 4 / App. D)."""

    max_new_tokens: int = 300
    temperature: float = 0.7
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0

    def for_agent(self, factory: Any) -> dict[str, Any]:
        """The settings an agent takes: those its class names in ``GENERATION_KEYS`` (none when it names none)."""
        declared = set(getattr(factory, "GENERATION_KEYS", ()))
        return {k: v for k, v in dataclasses.asdict(self).items() if k in declared}


@dataclass
class BenchmarkConfig:
    name: str = "custom"
    # policy spec for models.load_policy: "smollm2-135m", "tiny-llama", a local folder or a hub id; None = must be set
    policy: str | None = "smollm2-135m"
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    reference: str = "alpacafarm"  # Davinci003 reference set: "alpacafarm" (paper, A) or "alpacaeval1" (B)
    n_eval: int | None = None  # eval instructions (stratified by `dataset`); None = all 805
    # val instructions each kept checkpoint answers when a method selects its checkpoint by `select: val`
    # (benchmark/selection.py; never the eval split); None = all 2000
    n_select: int | None = 64
    subset_seed: int = 0
    annotator: str = "pooled"  # the evaluator
    annotator_kwargs: dict[str, Any] = field(default_factory=dict)
    annotator_seed: int = 0
    compare_to: str | None = None  # a method whose outputs are a second baseline column (tiny: "sft")
    methods: dict[str, dict[str, Any]] = field(default_factory=lambda: {"sft": {}, "best_of_n": {"n": 4}})
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # the shared pipeline stages (benchmark/pipeline.py): "sft" (SFTConfig fields; null = the policy is already the
    # SFT model, no SFT stage runs), "preferences" (collection config fields), "reward_model" (reward-model training
    # fields); empty = the paper's defaults
    stages: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    runs_root: str = "runs"
    # also log every training stage and method to "tensorboard" or "wandb" (each one's own report_to wins; no cache
    # or run-dir key depends on it); "none": the CSV files only
    report_to: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<config>") -> "BenchmarkConfig":
        """Build a config from a preset mapping; every key, type and name is checked (:meth:`validate`)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
        _check_keys(data, cls, source, "")
        data = dict(data)
        gen = data.pop("generation", None)
        if gen is None:
            gen = {}
        if not isinstance(gen, dict):
            raise ConfigError(f"{source}: 'generation' must be a mapping of {_field_names(GenerationConfig)}, "
                              f"got {type(gen).__name__}")
        _check_keys(gen, GenerationConfig, source, "generation.")
        methods = data.get("methods")
        if methods is not None:
            if isinstance(methods, list) and all(isinstance(m, str) for m in methods):  # a plain list of names
                methods = {m: {} for m in methods}
            if not isinstance(methods, dict) or not all(isinstance(v, (dict, type(None))) for v in methods.values()):
                raise ConfigError(f"{source}: 'methods' must map method names to keyword arguments")
            data["methods"] = {k: dict(v or {}) for k, v in methods.items()}
        for key in ("policy_kwargs", "annotator_kwargs", "stages"):
            if data.get(key) is None:
                data.pop(key, None)
        cfg = cls(**data, generation=GenerationConfig(**gen))
        cfg.validate(source)
        return cfg

    def validate(self, source: str = "<config>") -> "BenchmarkConfig":
        """The one check of a config, run before any work: every field's type and range, and every name (methods'
        agents, their rewards, the evaluator, the reference) resolvable. Raises :class:`ConfigError` naming the key
        and ``source`` (the preset file, or ``--flag`` for a command-line override)."""
        from ..annotators import ANNOTATORS
        from ..data import REFERENCES

        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"{source}: {key}: {msg}")

        _check_type(self.name, str, "name", source)
        if self.policy is not None and not isinstance(self.policy, str):
            raise bad("policy", f"expected a policy spec string (a preset name, a folder or a hub id) or null, "
                      f"got {self.policy!r} ({type(self.policy).__name__})")
        for key in ("policy_kwargs", "annotator_kwargs", "stages"):
            _check_type(getattr(self, key), dict, key, source)
        _check_stages(self.stages, source)
        if self.reference not in REFERENCES:
            raise bad("reference", f"unknown reference {self.reference!r}; choose one of {sorted(REFERENCES)}")
        if self.n_eval is not None:
            _check_type(self.n_eval, int, "n_eval", source)
            if self.n_eval < 1:
                raise bad("n_eval", f"must be >= 1 (or null for all 805), got {self.n_eval}")
        if self.n_select is not None:
            _check_type(self.n_select, int, "n_select", source)
            if self.n_select < 1:
                raise bad("n_select", f"must be >= 1 (or null for the whole val split), got {self.n_select}")
        for key in ("subset_seed", "annotator_seed"):
            _check_type(getattr(self, key), int, key, source)
        _check_type(self.annotator, str, "annotator", source)
        _resolve(ANNOTATORS, self.annotator, "annotator", source)
        from ..validation import check_call

        check_call(ANNOTATORS.resolve(self.annotator), self.annotator_kwargs, source, prefix="annotator_kwargs.",
                   what=f"annotator {self.annotator!r}")
        if self.compare_to is not None:
            _check_type(self.compare_to, str, "compare_to", source)
        _check_type(self.runs_root, str, "runs_root", source)
        _check_generation(self.generation.__dict__, source, "generation.")
        if not self.methods:
            raise bad("methods", "no methods to run")
        for method, kw in self.methods.items():
            _check_method(method, kw, source)
        _check_tracking(self.to_dict(), source)
        return self


STAGE_NAMES = ("sft", "preferences", "reward_model")


def _check_method(method: str, kw: dict[str, Any], source: str) -> None:
    """One method's entry: the agent resolvable and taking a ``policy``, every other key but ``select`` (the
    benchmark's, :mod:`.selection`) a keyword argument of the agent (its type, and its config dataclass's fields,
    checked by :mod:`~alpaca_farm_env.validation`), and the reward it names resolvable with keyword arguments it
    accepts."""
    from ..agents import AGENTS
    from ..rewards import REWARDS
    from ..validation import accepted_parameters, check_call

    where = f"methods.{method}"
    _check_type(kw.get("agent", method), str, where + ".agent" if "agent" in kw else where, source)
    agent = kw.get("agent", method)
    _resolve(AGENTS, agent, where + (".agent" if "agent" in kw else ""), source)
    factory = AGENTS.resolve(agent)
    named, takes_any = accepted_parameters(factory)
    if "policy" not in named and not takes_any:
        raise ConfigError(f"{source}: {where}: agent {agent!r} takes no 'policy' argument; the benchmark builds every "
                          f"agent as {agent}(policy=..., **settings)")
    _check_generation({k: v for k, v in kw.items() if k in _field_names(GenerationConfig)}, source, where + ".")
    check_call(factory, {k: v for k, v in kw.items() if k not in ("agent", "select")}, source, prefix=where + ".",
               what=f"agent {agent!r}")
    from .selection import check_select

    check_select(method, kw, factory, source)  # the benchmark's own key: which checkpoint is evaluated
    reward = kw.get("reward")
    if reward is not None:
        if isinstance(reward, str):
            _resolve(REWARDS, reward, where + ".reward", source)
        if kw.get("reward_kwargs") is not None:
            _check_type(kw["reward_kwargs"], dict, where + ".reward_kwargs", source)
            check_call(REWARDS.resolve(reward), kw["reward_kwargs"], source, prefix=where + ".reward_kwargs.",
                       what=f"reward {reward!r}")


def _check_tracking(data: Any, source: str, key: str = "") -> None:
    """Every ``report_to`` of the preset (top level, stages, methods' configs, at any depth) names a known tracker
    whose package is installed (:func:`~..tracking.check_report_to`): a run never fails on it after hours of
    training. Raises a one-line :class:`ConfigError`; returns None."""
    from ..tracking import check_report_to

    for k, v in data.items() if isinstance(data, dict) else ():
        where = f"{key}.{k}" if key else str(k)
        if k == "report_to":
            try:
                check_report_to(v, installed=True)
            except (ValueError, ImportError) as e:
                raise ConfigError(f"{source}: {where}: {str(e).removeprefix('report_to: ')}") from None
        else:
            _check_tracking(v, source, where)


def _check_stages(stages: dict[str, Any], source: str) -> None:
    from ..agents.preference_collection import CollectionConfig
    from ..agents.sft_loop import SFTConfig
    from ..annotators import ANNOTATORS
    from ..rewards.reward_model import RewardModelTrainingConfig
    from ..validation import check_call, check_fields, did_you_mean

    for name, fields in stages.items():
        if name not in STAGE_NAMES:
            raise ConfigError(f"{source}: stages: unknown stage {name!r}{did_you_mean(name, list(STAGE_NAMES))}; "
                              f"known: {list(STAGE_NAMES)}")
        if name == "sft" and fields is None:  # the given policy is the SFT model: no SFT stage
            continue
        _check_type(fields, dict, f"stages.{name}", source)
        if name == "sft":
            check_fields(SFTConfig, fields, source, prefix="stages.sft.")
        elif name == "preferences":
            fields = dict(fields)
            annotator = fields.pop("annotator", "noisy_pooled")
            annotator_kwargs = fields.pop("annotator_kwargs", {})
            num_envs = fields.pop("num_envs", 8)
            _check_type(annotator, str, "stages.preferences.annotator", source)
            _resolve(ANNOTATORS, annotator, "stages.preferences.annotator", source)
            _check_type(annotator_kwargs, dict, "stages.preferences.annotator_kwargs", source)
            check_call(ANNOTATORS.resolve(annotator), annotator_kwargs, source,
                       prefix="stages.preferences.annotator_kwargs.", what=f"annotator {annotator!r}")
            _check_type(num_envs, int, "stages.preferences.num_envs", source)
            if num_envs < 1:
                raise ConfigError(f"{source}: stages.preferences.num_envs: must be >= 1, got {num_envs}")
            check_fields(CollectionConfig, fields, source, prefix="stages.preferences.")
        else:
            fields = dict(fields)
            _check_type(fields.pop("backbone", "sft"), str, "stages.reward_model.backbone", source)
            check_fields(RewardModelTrainingConfig, fields, source, prefix="stages.reward_model.")


def _field_names(cls: type) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def _check_keys(data: dict[str, Any], cls: type, source: str, prefix: str) -> None:
    from ..validation import did_you_mean

    for key in data:
        if key not in _field_names(cls):
            raise ConfigError(f"{source}: unknown key {prefix + str(key)!r}{did_you_mean(key, _field_names(cls))}; "
                              f"known: {[prefix + k for k in _field_names(cls)]}")


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", dict: "a mapping", bool: "true or false"}


def _check_type(value: Any, typ: type, key: str, source: str) -> None:
    """``int`` accepts no bool and no float (``n_eval: 8.7`` is refused, not truncated); ``float`` accepts ints."""
    ok = isinstance(value, typ) and not (isinstance(value, bool) and typ is not bool)
    if typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(f"{source}: {key}: expected {_TYPE_WORDS.get(typ, typ.__name__)}, got {value!r} "
                          f"({type(value).__name__})")


def _check_generation(gen: dict[str, Any], source: str, prefix: str) -> None:
    limits = {  # key: (type, lowest allowed, highest allowed)
        "max_new_tokens": (int, 1, None), "batch_size": (int, 1, None), "seed": (int, None, None),
        "temperature": (float, 0.0, None), "top_p": (float, 0.0, 1.0),
    }
    for key, value in gen.items():
        typ, lo, hi = limits[key]
        _check_type(value, typ, prefix + key, source)
        if (lo is not None and value < lo) or (hi is not None and value > hi) or (key == "top_p" and value <= 0):
            rng = {"top_p": "in (0, 1]"}.get(key, f">= {lo}")
            raise ConfigError(f"{source}: {prefix}{key}: must be {rng}, got {value!r}")


def _resolve(registry: Any, spec: str, key: str, source: str) -> None:
    from ..registry import UnknownSpecError

    try:
        registry.resolve(spec)
    except UnknownSpecError as e:
        raise ConfigError(f"{source}: {key}: {e}") from None


def preset_path(name_or_path: str | Path) -> Path:
    """The YAML file of a shipped preset name, or the given path."""
    p = Path(name_or_path)
    if str(name_or_path) in PRESETS:
        return Path(str(resources.files("alpaca_farm_env") / "configs" / f"{name_or_path}.yaml"))
    if p.is_file():
        return p
    raise DataNotFoundError(f"preset {str(name_or_path)!r} is neither one of {list(PRESETS)} nor a YAML file")


def load_preset(name_or_path: str | Path) -> BenchmarkConfig:
    import yaml

    path = preset_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        from ..utils import decode_error_text

        raise ConfigError(f"{path}: {decode_error_text(e)}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        raise ConfigError(f"{path}: the preset is empty; copy a shipped one (alpaca-farm benchmark --preset tiny "
                          "--print-config) and edit it")
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
