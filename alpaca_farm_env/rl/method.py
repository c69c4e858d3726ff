"""``RLMethod``: what an RL agent implements so that :class:`~alpaca_farm_env.rl.trainer.RLTrainer` can train it, and
the agent-protocol plumbing every RL agent shares (written once).

An RL agent is ``class MyAgent(RLMethod, BaseAgent)``: :class:`~alpaca_farm_env.agents.sft.BaseAgent` gives it the
sampling of ``respond`` (and the answer settings ``temperature``, ``top_p``, ``batch_size``, ``seed``), ``RLMethod``
the rest of the agent protocol (``policy``, ``history``, ``eval_hook``, ``evaluator``, ``describe``) and the hooks to
write:

* ``fit(envs, *, policy, reward, output_dir)``: resolve the ``reward`` stage product to ``(spec, kwargs)``
  (``agents.common.reward_of_stage``: the stage's layout is the agents' business) and call :meth:`RLMethod.train`;

* ``build(policy, reward_backend) -> torch.nn.Module``: the module to train (the trainer makes AdamW over its
  trainable parameters and prepares both with Accelerate);
* ``step(step) -> dict``: one RL step, the algorithm (rollouts through ``self.trainer.rollouts``, losses, updates
  through ``self.trainer.accumulate``); returns the step's metrics row (``CSV_FIELDS``, ``lr`` added by the trainer);
* ``current_policy()`` / ``final_policy()``: a Policy over the module being trained / the trained one, to save.

A method missing a hook fails when it is constructed (``abc``), not in the middle of a fit. ``train`` chooses the
reward (the constructor's ``reward=``, else the ``reward`` stage, else the env's own), refuses the evaluator's judge,
and hands the rest to a fresh :class:`~alpaca_farm_env.rl.trainer.RLTrainer` (``self.trainer``).

Kept checkpoints (``config.keep_checkpoints``): :meth:`RLMethod.checkpoint_schedule` says before any compute at which
steps a config keeps its policy, :meth:`~RLMethod.checkpoint_steps` which ones a fit kept, and
:meth:`~RLMethod.checkpoint_policy` loads one; assigning it to ``policy`` makes the agent answer with it (the
benchmark's checkpoint selection, ``benchmark/selection.py``).
"""
from __future__ import annotations

import abc
import os
from dataclasses import asdict
from typing import Any, Callable, ClassVar, Mapping, Sequence

from ..envs.reward_info import learning_reward
from .rollout import is_alpaca_farm_env
from .trainer import RLTrainer, saved_steps

__all__ = ["RLMethod"]

EvalHook = Callable[[Any], Mapping[str, float]]


class RLMethod(abc.ABC):
    """The hooks an RL method implements and the agent plumbing around :class:`RLTrainer` (see the module docstring).
    Constructor: ``policy`` (the start policy, or the ``policy`` stage at fit); ``config``: a ``CONFIG_CLASS`` or a
    mapping of its fields; ``reward=`` / ``reward_kwargs=``: a reward that overrides the ``reward`` stage;
    ``evaluator``: the benchmark's evaluator spec (refused as the reward); ``evaluate``: the ``eval_hook``, called as
    ``eval_hook(agent) -> dict`` every ``eval_steps``; ``accelerator``: an ``accelerate.Accelerator`` (made at fit
    when None); the rest goes to the sampling agent (``max_new_tokens``, ``temperature``, ...)."""

    ENVS: ClassVar[dict[str, dict[str, Any]]] = {
        "unlabeled": {"id": "AlpacaFarm-v0", "split": "unlabeled", "reward": "length"},
    }
    STAGES: ClassVar[tuple[str, ...]] = ("policy", "reward", "output_dir")
    CONFIG_CLASS: ClassVar[type] = object
    CSV_FIELDS: ClassVar[tuple[str, ...]] = ()  # the columns of metrics.csv after "step" (before "seconds")

    def __init__(self, policy: Any = None, *, config: Any = None, reward: Any = None,
                 reward_kwargs: dict[str, Any] | None = None, evaluator: Any = None,
                 evaluate: EvalHook | None = None, accelerator: Any = None, **kwargs: Any):
        super().__init__(policy, evaluator=evaluator, **kwargs)
        self.config = config if isinstance(config, self.CONFIG_CLASS) else self.CONFIG_CLASS(**dict(config or {}))
        self.reward_override = (reward, dict(reward_kwargs or {})) if reward is not None else None
        self.evaluator = evaluator
        self.eval_hook: EvalHook | None = evaluate
        self._accelerator = accelerator
        self.trainer: RLTrainer | None = None
        self.fitted = False
        self.history: list[dict[str, Any]] = []  # per-step statistics; the trainer's list during and after fit

    # ------------------------------------------------------------------------------------------------ the hooks
    @abc.abstractmethod
    def fit(self, envs: Mapping[str, Any], **stages: Any) -> None:
        """The agent protocol's ``fit``: resolve the ``reward`` stage to ``(spec, kwargs)`` and call :meth:`train`."""

    @abc.abstractmethod
    def build(self, policy: Any, reward_backend: Any) -> Any:
        """Returns the module to train (a ``torch.nn.Module``), made from the start policy and the reward backend."""

    @abc.abstractmethod
    def step(self, step: int) -> dict[str, Any]:
        """One RL step (``step`` counts from 0): rollouts, scoring, updates. Returns the step's metrics row."""

    @abc.abstractmethod
    def current_policy(self) -> Any:
        """Returns a Policy over the module being trained (the LoRA adapter active), for evals and the hook."""

    @abc.abstractmethod
    def final_policy(self) -> Any:
        """Returns the trained Policy (unwrapped from Accelerate, LoRA merged) that ``fit`` saves and answers with."""

    def extra_state(self) -> dict[str, Any]:
        """Returns what a checkpoint keeps besides the Accelerate state (e.g. the KL coefficient); JSON values."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned (from the checkpoint's ``trainer.json``)."""
        return None

    def summary_extra(self) -> dict[str, Any]:
        """Returns extra entries for ``summary.json`` (e.g. where PPO's value model came from)."""
        return {}

    # ------------------------------------------------------------------------------------------------ checkpoints
    @classmethod
    def checkpoint_schedule(cls, config: Any = None) -> list[int]:
        """Returns the steps at which a fit with ``config`` (a ``CONFIG_CLASS``, a mapping of its fields, or None for
        the defaults) saves, and keeps its policy when ``keep_checkpoints`` is on: every ``save_steps``-th step and
        the last."""
        cfg = config if isinstance(config, cls.CONFIG_CLASS) else cls.CONFIG_CLASS(**dict(config or {}))
        return saved_steps(cfg)

    def checkpoint_steps(self) -> list[int]:
        """Returns the steps whose policy the last fit kept (``output_dir/checkpoints/step_<k>``), in order; [] before
        a fit."""
        return self.trainer.kept_steps() if self.trainer is not None and self.trainer.output_dir else []

    def checkpoint_policy(self, step: int) -> Any:
        """Returns the Policy kept at ``step`` by the last fit (:meth:`RLTrainer.load_kept`); ``agent.policy =
        agent.checkpoint_policy(k)`` makes the agent answer with it. Raises ``ValueError`` when no policy was kept at
        ``step``."""
        if self.trainer is None or not self.trainer.output_dir:
            raise ValueError(f"{self.name} has kept no checkpoints: call fit() with keep_checkpoints=True first")
        return self.trainer.load_kept(step)

    # ------------------------------------------------------------------------------------------------ train
    def train(self, envs: Mapping[str, Any], *, policy: Any = None, reward: tuple[Any, dict[str, Any]] | None = None,
              output_dir: str | os.PathLike | None = None) -> None:
        """Train on ``envs["unlabeled"]`` from ``policy`` in ``output_dir`` (see :class:`RLTrainer`). ``reward``: the
        ``(spec, kwargs)`` of the ``reward`` stage (None: no stage), already resolved by the agent's ``fit``. Returns
        None; afterwards ``policy`` is the trained policy (unless ``stop_after`` stopped the run early)."""
        if output_dir is None:
            raise ValueError(f"{self.name} needs the output_dir stage (checkpoints, metrics.csv, the trained policy)")
        if not envs or "unlabeled" not in envs:
            raise ValueError(f"{self.name} needs envs['unlabeled']: {self.ENVS['unlabeled']}")
        if policy is not None:
            self._policy = policy
        if self._policy is None:
            raise ValueError(f"{self.name} needs the policy stage (the SFT policy it starts from)")
        env = envs["unlabeled"]
        if not is_alpaca_farm_env(env):
            raise TypeError(f"{type(env).__name__} is not an AlpacaFarm-v0 env "
                            "(gym.make / gym.make_vec('AlpacaFarm-v0'))")
        self.fitted, self.trainer = False, None
        start = self.policy
        spec, kwargs = self._choose_reward(env, reward)
        self.trainer = RLTrainer(self, self._accelerator)
        self.history = self.trainer.history  # one list: the trainer appends each step's row
        trained = self.trainer.fit(env, start, spec, kwargs, output_dir)
        self._accelerator = self.trainer.accelerator
        if trained is not None:
            self._policy, self.fitted = trained, True

    def _choose_reward(self, env: Any, stage: tuple[Any, dict[str, Any]] | None) -> tuple[Any, dict[str, Any]]:
        """Returns ``(spec, kwargs)`` of the reward to learn from (:func:`~..envs.reward_info.learning_reward`)."""
        return learning_reward(env, self.reward_override, stage, self.evaluator, self.name)

    # ------------------------------------------------------------------------------------------------ protocol
    @property
    def policy(self) -> Any:
        """The policy the agent answers with: the trained one after ``fit``, the one being trained during it (for
        the eval hook), the start policy before."""
        if not self.fitted and self.trainer is not None and self.trainer.module is not None:
            return self.current_policy()
        return super().policy

    @policy.setter
    def policy(self, policy: Any) -> None:
        self._policy = policy

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` of the finished run; empty before."""
        return self.trainer.summary if self.trainer is not None else {}

    @property
    def reward_name(self) -> str:
        """A short text naming the reward the method learns from (empty before ``fit``)."""
        return self.trainer.reward_name if self.trainer is not None else ""

    @property
    def accelerator(self) -> Any:
        return self.trainer.accelerator if self.trainer is not None else self._accelerator

    @property
    def trained_module(self) -> Any:
        """The module being trained, as Accelerate prepared it (None before ``fit``)."""
        return self.trainer.module if self.trainer is not None else None

    def respond(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        """Sample one response per observation from :attr:`policy`; before ``fit`` has finished only from inside the
        eval hook."""
        if not self.fitted and (self.eval_hook is None or self.trained_module is None):
            raise RuntimeError(f"{self.name} answers with the policy it trains: call fit() first")
        return super().respond(observations)

    def describe(self) -> dict[str, Any]:
        """The settings that determine the outputs: the sampling agent's, the config and the reward's name."""
        return {**super().describe(), "config": asdict(self.config), "reward": self.reward_name}
