"""The AlpacaFarm pipeline's shared stages (paper Sec. 4, App. B), each built once per run dir and reused by every
method that needs it, keyed by everything that determines it:

* ``sft``: the starting policy fine-tuned on the ``sft`` split's demonstrations (through ``AlpacaFarm-v0``), the
  start of every method (SFT10k in the paper) -- key: policy spec, SFT config, the demonstrations. With
  ``stages.sft: null`` the given policy *is* the SFT model (the paper preset: ``policy`` is SFT10k): no SFT stage
  runs, every method starts from the given policy, and the ``sft`` method answers with it as it is
  (:meth:`Pipeline.is_given`);
* ``preferences``: two samples per ``preference``-split instruction from the SFT policy at temperature 1.0, labelled
  by the noisy simulated pool through ``AlpacaFarmPairwise-v0`` -- key: the SFT stage, the collection config, the
  annotator's identity, the prompts;
* ``reward_model``: a reward model trained on those preferences -- key: the preferences, the training config.

Each stage lives in ``<run_dir>/stages/<stage>-<key>/`` and records its wall time in ``stage.json``; a killed stage
resumes from its checkpoint or JSONL file. Stages are built only when a method asks for them (``Agent.STAGES``).
A method that runs the agent a stage is built with (``SFTAgent`` for ``sft``) *is* that stage
(:meth:`Pipeline.stage_of`).

Tracking: the preset's top-level ``report_to`` is the default of every stage's and method's own ``report_to``
(:meth:`Pipeline.stage_fields`, :meth:`Pipeline.tracked_kwargs`); no key digests it (:func:`~..tracking.untracked`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym

from ..tracking import untracked
from ..utils import atomic_write_text, digest
from .config import BenchmarkConfig


def make_env(spec: dict[str, Any], data_dir: Any, num_envs: int | None = None) -> Any:
    """``gym.make`` (or ``gym.make_vec`` when ``num_envs`` is given) of an agent's env request, on the run's data."""
    kw = {k: v for k, v in spec.items() if k != "id"}
    if data_dir is not None:
        kw.setdefault("data_dir", str(data_dir))
    if num_envs is not None:
        return gym.make_vec(spec["id"], num_envs=num_envs, **kw)
    return gym.make(spec["id"], **kw)


class Pipeline:
    """Builds and caches the stages of one run (lazily), and hands each method the products it declared."""

    def __init__(self, cfg: BenchmarkConfig, run_dir: Path, data_dir: Any, progress: bool, log: Callable[[str], None]):
        self.cfg, self.run_dir, self.data_dir, self.progress, self.log = cfg, Path(run_dir), data_dir, progress, log
        self.times: dict[str, float | None] = {}  # stage -> seconds its build took (read back when reused)
        self._keys: dict[str, str] = {}

    # ------------------------------------------------------------------------------------------------ stage: sft
    @property
    def sft_given(self) -> bool:
        """Whether the preset says the given policy is already the SFT model (``stages.sft: null``): no SFT stage."""
        return "sft" in self.cfg.stages and self.cfg.stages["sft"] is None

    def is_given(self, agent_cls: Any) -> bool:
        """Whether a method *is* a stage the preset gives rather than builds (the ``sft`` method under
        ``stages.sft: null``): it is not fitted, and answers with the given policy as it is."""
        return self.stage_of(agent_cls) == "sft" and self.sft_given

    def answers_with_given_policy(self, agent_cls: Any) -> bool:
        """Whether a method's row is the given policy as it is while that policy is the SFT model
        (``stages.sft: null``): the ``sft`` method, and the ``base`` agent (then the same model; the paper preset
        drops it). Its label says so."""
        from ..agents.sft import BaseAgent

        return self.is_given(agent_cls) or (self.sft_given and agent_cls is BaseAgent)

    def sft_key(self) -> str:
        if "sft" not in self._keys and self.sft_given:  # the given policy, untrained
            self._keys["sft"] = digest({"policy": self.cfg.policy, "policy_kwargs": self.cfg.policy_kwargs,
                                        "sft": None})[:12]
        if "sft" not in self._keys:
            from ..agents.sft import SFTAgent

            env = make_env(SFTAgent.ENVS["sft"], self.data_dir)
            demos = env.unwrapped.demonstrations
            self._keys["sft"] = digest({"policy": self.cfg.policy, "policy_kwargs": self.cfg.policy_kwargs,
                                        "sft": untracked(self.cfg.stages.get("sft", {})),
                                        "demonstrations": digest([[d["prompt"], d["output"]] for d in demos])})[:12]
        return self._keys["sft"]

    def sft_dir(self) -> Path:
        """The sft stage's folder (its checkpoint, ``model/``, ``summary.json``)."""
        return self._stage_dir("sft")

    def sft_policy(self) -> Any:
        """A fresh copy of the trained SFT policy (each method fine-tunes its own); the given policy itself under
        ``stages.sft: null``."""
        from ..agents.sft import SFTAgent
        from ..models import load_policy

        if self.sft_given:
            return load_policy(self.cfg.policy, **self.cfg.policy_kwargs)
        folder = self.sft_dir()
        if not self._built("sft"):
            with self._timed("sft", folder):
                agent = SFTAgent(load_policy(self.cfg.policy, **self.cfg.policy_kwargs),
                                 sft=self.stage_fields("sft"), progress=self.progress)
                self.log(f"stage sft: fine-tuning {self.cfg.policy!r} on the sft split -> {folder}")
                agent.fit({"sft": make_env(SFTAgent.ENVS["sft"], self.data_dir)}, output_dir=str(folder))
        else:
            self._reused("sft", folder)
        return load_policy(str(folder / "model"), **self.cfg.policy_kwargs)

    # ------------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def stage_of(agent_cls: Any) -> str | None:
        """The stage a method *is*, or None: the ``sft`` stage is built with :class:`~..agents.sft.SFTAgent`, so a
        method running that very agent is the stage (its config is ``stages.sft``, it trains once in the stage's
        folder, and every method after SFT starts from what it trained)."""
        from ..agents.sft import SFTAgent

        return "sft" if agent_cls is SFTAgent else None

    def stage_config(self, agent_cls: Any) -> dict[str, Any]:
        """The keyword arguments a stage's own agent takes from the preset's ``stages`` (``{"sft": stages.sft}`` for
        the sft stage's agent; ``{}`` for every other method)."""
        stage = self.stage_of(agent_cls)
        return {stage: self.stage_fields(stage)} if stage and not self.is_given(agent_cls) else {}

    def stage_fields(self, stage: str) -> dict[str, Any]:
        """The preset's fields of a training stage (``sft``, ``reward_model``), with the top-level ``report_to``
        where the stage sets none."""
        fields = dict(self.cfg.stages.get(stage) or {})
        if self.cfg.report_to != "none":
            fields.setdefault("report_to", self.cfg.report_to)
        return fields

    def tracked_kwargs(self, agent_cls: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Returns a method's constructor keywords with the top-level ``report_to`` in its ``config`` mapping (and in
        the mappings of the config's nested configs that take one, e.g. expert iteration's ``sft``) where the method
        sets none; ``kwargs`` as they are when it is ``"none"`` or the config is given as an instance."""
        import dataclasses
        import typing

        from ..validation import config_class_for

        cls = config_class_for(agent_cls, "config")
        if self.cfg.report_to == "none" or cls is None or dataclasses.is_dataclass(kwargs.get("config")):
            return kwargs

        def fill(cls: type, fields: dict[str, Any]) -> dict[str, Any]:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                nested = hints.get(f.name)
                if f.name == "report_to":
                    fields.setdefault("report_to", self.cfg.report_to)
                elif dataclasses.is_dataclass(nested) and not dataclasses.is_dataclass(fields.get(f.name)):
                    fields[f.name] = fill(nested, dict(fields.get(f.name) or {}))
            return fields

        return {**kwargs, "config": fill(cls, dict(kwargs.get("config") or {}))}

    def wanted(self, agent_cls: Any, given: dict[str, Any]) -> tuple[str, ...]:
        """The stages a method takes: its ``STAGES``, less ``reward`` when the preset names its reward (e.g. best-of-n
        reranking by ``length`` needs no reward model); none for a method that is a given stage (:meth:`is_given`)."""
        if self.is_given(agent_cls):
            return ()
        return tuple(s for s in getattr(agent_cls, "STAGES", ()) if not (s == "reward" and "reward" in given))

    def stages_for(self, agent_cls: Any, method: str, fit_dir: Path, given: dict[str, Any] | None = None
                   ) -> tuple[dict[str, Any], dict[str, str]]:
        """The stage products the method takes (:meth:`wanted`), and the keys of the stages they came from (part of
        the method's generation cache key: a changed stage regenerates the method's outputs)."""
        from ..models import load_policy

        wanted = self.wanted(agent_cls, given or {})
        products: dict[str, Any] = {}
        keys: dict[str, str] = {}
        is_sft = self.stage_of(agent_cls) == "sft"
        if "policy" in wanted:
            if is_sft:  # the sft method is the stage: build it here (timed, shared), the agent then loads it
                self.sft_policy()
                products["policy"] = load_policy(self.cfg.policy, **self.cfg.policy_kwargs)
            else:
                products["policy"] = self.sft_policy()
                keys["sft"] = self.sft_key()
        if "preferences" in wanted:
            products["preferences"], keys["preferences"] = self.preferences()
        if "reward" in wanted:
            products["reward"], keys["reward_model"] = self.reward_model()
        if "output_dir" in wanted:
            products["output_dir"] = str(self.sft_dir()) if is_sft else str(fit_dir)
            if is_sft:
                keys["sft"] = self.sft_key()
        return products, keys

    # ------------------------------------------------------------------------------------------------ stage: preferences
    PREFERENCE_ENV = {"id": "AlpacaFarmPairwise-v0", "split": "preference", "annotator": "noisy_pooled",
                      "seed_mode": "instruction", "shuffle": False}

    def _preference_settings(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(collection config fields, pairwise-env kwargs) from ``stages.preferences``: ``annotator`` (default the
        noisy pool), ``annotator_kwargs``, ``num_envs``, and the :class:`CollectionConfig` fields."""
        fields = dict(self.cfg.stages.get("preferences", {}))
        env = {**self.PREFERENCE_ENV, "annotator": fields.pop("annotator", "noisy_pooled"),
               "annotator_kwargs": fields.pop("annotator_kwargs", {})}
        env["num_envs"] = int(fields.pop("num_envs", 8))
        return fields, env

    def preferences_key(self) -> str:
        if "preferences" not in self._keys:
            from ..annotators import annotator_identity
            from ..context import RewardContext

            fields, env = self._preference_settings()
            ann = env["annotator"]
            identity = annotator_identity(ann, context=RewardContext.of(self.data_dir), **env["annotator_kwargs"])
            prompts = make_env({k: v for k, v in env.items() if k != "num_envs"}, self.data_dir).unwrapped.demonstrations
            self._keys["preferences"] = digest({"sft": self.sft_key(), "collection": fields, "annotator": identity,
                                                "env": {k: v for k, v in env.items() if k != "annotator_kwargs"},
                                                "prompts": digest([d["prompt"] for d in prompts])})[:12]
        return self._keys["preferences"]

    def preferences(self) -> tuple[list[dict[str, Any]], str]:
        """Pairs collected through ``AlpacaFarmPairwise-v0`` from the SFT policy (resumed from its JSONL file)."""
        from ..agents.preference_collection import CollectionConfig, collect_preferences

        key = self.preferences_key()
        folder = self.run_dir / "stages" / f"preferences-{key}"
        fields, env = self._preference_settings()
        if (folder / "stage.json").is_file():
            self._reused("preferences", folder)
        rows: list[dict[str, Any]] = []
        with self._timed("preferences", folder, skip=(folder / "stage.json").is_file()):
            num_envs = env.pop("num_envs")
            envs = make_env(env, self.data_dir, num_envs=num_envs)
            rows = collect_preferences(self.sft_policy(), envs, config=CollectionConfig(**fields),
                                       output_path=folder / "preferences.jsonl", progress=self.progress)
        return rows, key

    # ------------------------------------------------------------------------------------------------ stage: reward model
    def reward_model_key(self) -> str:
        if "reward_model" not in self._keys:
            self._keys["reward_model"] = digest({"preferences": self.preferences_key(),
                                                 "reward_model": untracked(self.cfg.stages.get("reward_model", {}))})[:12]
        return self._keys["reward_model"]

    def reward_model(self) -> tuple[dict[str, Any], str]:
        """A reward model trained on the collected preferences (``stages.reward_model``: ``backbone`` -- the SFT
        policy by default, as the reference; ``"minilm"`` on a CPU -- and the training config's fields)."""
        from ..rewards.reward_model import reward_model_spec, reward_model_summary, train_reward_model

        key = self.reward_model_key()
        folder = self.run_dir / "stages" / f"reward_model-{key}"
        fields = self.stage_fields("reward_model")
        backbone = fields.pop("backbone", "sft")
        if (folder / "model" / "summary.json").is_file():
            self._reused("reward_model", folder)
        else:
            rows, _ = self.preferences()
            with self._timed("reward_model", folder):
                start = backbone
                if backbone == "sft":  # the SFT policy: the given one under stages.sft: null
                    start = self.cfg.policy if self.sft_given else str(self.sft_dir() / "model")
                train_reward_model(rows, start, folder / "model", progress=self.progress, **fields)
            acc = reward_model_summary(folder / "model").get("eval_accuracy")
            self.log(f"stage reward_model: held-out accuracy {acc}")
        return reward_model_spec(folder / "model"), key

    def _stage_dir(self, stage: str) -> Path:
        key = {"sft": self.sft_key, "preferences": self.preferences_key, "reward_model": self.reward_model_key}[stage]()
        return self.run_dir / "stages" / f"{stage}-{key}"

    def _built(self, stage: str) -> bool:
        """Whether ``stage`` is finished in this run dir (its model and summary, or its ``stage.json``)."""
        folder = self._stage_dir(stage)
        if stage == "preferences":
            return (folder / "stage.json").is_file()
        summary = folder / ("summary.json" if stage == "sft" else "model/summary.json")
        return (folder / "model").is_dir() and summary.is_file()

    def plan(self, wanted: set[str]) -> list[tuple[str, Path, bool, dict[str, Any]]]:
        """The shared stages that methods taking the stage products ``wanted`` depend on, in pipeline order, each as
        (stage, folder, already built, its preset settings); nothing is built."""
        needs = {"sft": {"policy", "output_dir", "preferences", "reward"}, "preferences": {"preferences", "reward"},
                 "reward_model": {"reward"}}
        return [(stage, self._stage_dir(stage), self._built(stage), self.cfg.stages.get(stage, {}))
                for stage in needs if wanted & needs[stage] and not (stage == "sft" and self.sft_given)]

    def stage_seconds(self, stages: set[str]) -> dict[str, float | None]:
        """The build time of each of ``stages`` (``sft``, ``preferences``, ``reward_model``), in pipeline order: as
        measured in this run, else as recorded in the stage's ``stage.json`` when it was built (without building)."""
        out: dict[str, float | None] = {}
        for stage in ("sft", "preferences", "reward_model"):
            if stage == "sft" and self.sft_given:  # no SFT stage ran: the given policy is the SFT model
                continue
            if stage in self.times:
                out[stage] = self.times[stage]
            elif stage in stages:
                try:
                    out[stage] = json.loads((self._stage_dir(stage) / "stage.json").read_text(encoding="utf-8"))["seconds"]
                except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                    out[stage] = None
        return out

    def _timed(self, stage: str, folder: Path, skip: bool = False):
        pipeline = self

        class _Timer:
            def __enter__(self):
                self.t0 = time.time()

            def __exit__(self, *exc):
                if exc[0] is None and not skip:
                    pipeline.times[stage] = round(time.time() - self.t0, 1)
                    folder.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(folder / "stage.json", json.dumps({"stage": stage, "seconds": pipeline.times[stage]}))
                return False

        return _Timer()

    def _reused(self, stage: str, folder: Path) -> None:
        """A stage built before: its build time, as recorded in ``stage.json`` then, is what the results report."""
        if stage not in self.times:
            meta = folder / "stage.json"
            try:
                built = json.loads(meta.read_text(encoding="utf-8")).get("seconds") if meta.is_file() else None
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                built = None
            self.times[stage] = built
            self.log(f"stage {stage}: reused {folder}" + (f" (built in {built} s)" if built is not None else ""))
