"""The base of every AlpacaFarm env: the constructor arguments they share and the seeded reset, each written once.

* :class:`EpisodeConfig`: which prompts (``split``, ``data_dir``, ``reference``, ``indices``, ``max_examples``), in
  which order (``shuffle``, ``seed``), and which seed keys the annotator's noise (``seed_mode``). Every env takes
  these as keyword arguments (``gym.make("AlpacaFarm-v0", split="eval", seed_mode="instruction")``).
* :class:`AlpacaFarmEnvBase`: mixed in before ``gym.Env`` / ``VectorEnv``. It loads the rows, runs ``reset`` (seed
  the env, restart the episode order from the fresh ``np_random``, pick the next examples, hand them to the
  subclass's :meth:`~AlpacaFarmEnvBase._begin`), draws one reward seed per scored episode, and holds the reward
  backend (or, for the pairwise envs, the annotator) with the :class:`~alpaca_farm_env.context.RewardContext` it
  is built and called with. ``isinstance(env.unwrapped, AlpacaFarmEnvBase)`` tells an AlpacaFarm env.

Reward seeds. Every scored episode gets its own seed, drawn from a generator spawned from the env's ``np_random`` at
seeding, and reaches the backend as ``context.episode_seeds``. The annotator reward keys its label noise and pool
member on it, so revisiting a prompt with the same response draws fresh noise, as a human labeller pool would; the
sequence is a function of the ``reset(seed=...)`` seed. ``seed_mode="instruction"`` passes no episode seeds: the
draws are keyed on the instruction, as alpaca_eval annotates a dataset once (docs/annotators.md).
"""
from __future__ import annotations

import abc
import copy
import os
import sys
import warnings
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Generic, Sequence, TypeVar

import numpy as np

from ..context import RewardContext
from ..errors import ConfigError, TrainingOnTestSetWarning
from ..rewards import JUDGES_PAIRS, NEEDS_REFERENCE, capabilities_of, check_reward
from .source import (CUSTOM_SPLIT, EVAL_SPLIT, EpisodeOrder, get_annotator, get_reward_backend, load_rows,
                     prompt_rows, score_rows)

ObsT = TypeVar("ObsT")
ActT = TypeVar("ActT")
SEED_MODES = ("episode", "instruction")
TEXT_KEYS = ("instruction", "input", "prompt")


@dataclass
class EpisodeConfig:
    """The keyword arguments every AlpacaFarm env takes: the prompts, their order and the seeds of their rewards."""

    split: str = "unlabeled"
    """``"unlabeled"``, ``"sft"``, ``"preference"``, ``"val"`` (the instruction splits; RL prompts) or ``"eval"``
    (the 805 evaluation instructions); ``"custom"`` when ``prompts`` is given."""
    prompts: Any = None
    """A user's own prompts instead of a split: a list of dicts, a ``.json``/``.jsonl`` path or a
    ``datasets.Dataset``, each row with ``instruction`` and optionally ``input`` and ``reference_output``
    (:func:`~alpaca_farm_env.data.rows.prompt_rows`)."""
    data_dir: str | os.PathLike | None = None
    """Local data directory; else ``$ALPACA_FARM_DATA_DIR``, else the Hugging Face hub. It also reaches the reward
    backend and annotator, in the :class:`~alpaca_farm_env.context.RewardContext`."""
    reference: str = "alpacafarm"
    """The eval set's Davinci003 reference: ``"alpacafarm"`` (the paper's) or ``"alpacaeval1"``."""
    indices: Sequence[int] | None = None
    """Positions in the split to use (a subset); ``None``: all."""
    max_examples: int | None = None
    """Keep the first ``max_examples`` of the selection."""
    shuffle: bool = True
    """A fresh permutation of the rows every epoch (drawn from the env's ``np_random``); else the data order."""
    seed: int | None = None
    """The seed of the first ``reset()`` when it is called without one."""
    seed_mode: str = "episode"
    """Which seed keys the annotator's draws (pool member, label noise, output order): ``"episode"``, a fresh seed per
    scored episode from the env's seeded RNG (a labeller pool answering each visit anew; the default), or
    ``"instruction"``, the instruction alone (alpaca_eval: a dataset annotated once, the benchmark's evaluation)."""

    def __post_init__(self) -> None:
        if self.seed_mode not in SEED_MODES:
            raise ValueError(f"seed_mode must be one of {SEED_MODES}, got {self.seed_mode!r}")
        if self.prompts is not None:
            self.split = CUSTOM_SPLIT

    @classmethod
    def of(cls, env: Any, kwargs: dict[str, Any], **defaults: Any) -> "EpisodeConfig":
        """The config of ``env`` from its remaining keyword arguments (over ``defaults``); an unknown keyword raises a
        ``TypeError`` naming the env and the fields it takes."""
        from ..validation import did_you_mean

        names = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise TypeError(f"{type(env).__name__} got unknown keyword arguments {unknown}"
                            f"{did_you_mean(unknown[0], names)}; besides its own it takes the EpisodeConfig fields "
                            f"{names}")
        if kwargs.get("prompts") is not None and kwargs.get("split", CUSTOM_SPLIT) != CUSTOM_SPLIT:
            raise ConfigError(f"give split={kwargs['split']!r} or prompts=, not both")
        return cls(**{**defaults, **kwargs})

    def load_rows(self) -> list[dict[str, Any]]:
        """The selected rows (:func:`~alpaca_farm_env.envs.source.load_rows`, or ``prompt_rows`` of ``prompts``)."""
        if self.prompts is not None:
            return prompt_rows(self.prompts, indices=self.indices, max_examples=self.max_examples)
        return load_rows(self.split, data_dir=self.data_dir, reference=self.reference, indices=self.indices,
                         max_examples=self.max_examples)


def check_gymnasium_vectorization(env: Any) -> None:
    """Called by the one-step envs' constructors: inside ``gym.make_vec(..., vectorization_mode="sync" | "async")``,
    refuse Gymnasium's default next-step autoreset and the async shared memory, with a one-line ``ConfigError`` that
    names the fix. Under next-step autoreset every second ``step`` of a one-step episode only resets: its actions (the
    generated responses) are dropped and it returns reward 0 (gymnasium ``vector/sync_vector_env.py``, ``step``). The
    text spaces have no shared-memory layout. Read from ``make_vec``'s frame because Gymnasium passes a sub-env nothing
    about the vector env that builds it; a ``SyncVectorEnv`` built by hand is not checked."""
    from gymnasium.vector import AutoresetMode

    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "make_vec"
                                     and "gymnasium" in frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return
    mode = str(getattr(frame.f_locals.get("vectorization_mode"), "value", frame.f_locals.get("vectorization_mode")))
    vector_kwargs = dict(frame.f_locals.get("vector_kwargs") or {})
    name = type(env).__name__
    if mode not in ("sync", "async"):
        return
    native = ("or use the native batched env (gym.make_vec(id, num_envs=N) without vectorization_mode: one batched "
              "reward call per step)")
    if AutoresetMode(vector_kwargs.get("autoreset_mode", AutoresetMode.NEXT_STEP)) != AutoresetMode.SAME_STEP:
        raise ConfigError(f"{name} under vectorization_mode={mode!r} needs vector_kwargs={{'autoreset_mode': "
                          f"gymnasium.vector.AutoresetMode.SAME_STEP}} (the default next-step autoreset makes every "
                          f"second step a reset that drops its responses), {native}")
    if mode == "async" and vector_kwargs.get("shared_memory", True):
        raise ConfigError(f"{name} under vectorization_mode='async' needs vector_kwargs['shared_memory'] = False (text "
                          f"observations have no shared-memory layout), {native}")


def row_observation(row: dict[str, Any]) -> dict[str, str]:
    """The text observation of a row: ``{"instruction", "input", "prompt"}``."""
    return {k: row[k] for k in TEXT_KEYS}


def backend_name(backend: Any) -> str:
    """A reward backend's (or annotator's) ``name``, else its class name."""
    return str(getattr(backend, "name", type(backend).__name__))


class AlpacaFarmEnvBase(abc.ABC, Generic[ObsT, ActT]):
    """The base of every AlpacaFarm env (see the module docstring). Subclasses call ``super().__init__(config)``,
    then :meth:`_use_reward` or :meth:`_use_annotator`, implement :meth:`_begin` and ``step``; vector envs set
    ``num_envs`` before ``reset`` and ``batched = True``."""

    batched: ClassVar[bool] = False

    def __init__(self, config: EpisodeConfig, rows: list[dict[str, Any]] | None = None):
        self.config = config
        self.split, self.reference, self.data_dir = config.split, config.reference, config.data_dir
        self.seed_mode = config.seed_mode
        self.rows: list[dict[str, Any]] = list(rows) if rows is not None else config.load_rows()
        self.reward_context = RewardContext.of(config.data_dir, config.split)
        self._order = EpisodeOrder(len(self.rows), shuffle=config.shuffle)
        self._started = False
        self._noise_rng: np.random.Generator | None = None
        self._current: list[int] | None = None
        self._backend: Any = None

    # ------------------------------------------------------------------------------------------ reward / annotator
    def _use_reward(self, reward: Any, reward_kwargs: dict[str, Any] | None) -> None:
        """Score with ``reward`` (a spec for ``rewards.make_reward``), built on first use. An unknown name (reward,
        or ``reward_kwargs["annotator"]``) fails here, not at the first step."""
        check_reward(reward, **dict(reward_kwargs or {}))
        self.reward_spec, self.reward_kwargs = reward, dict(reward_kwargs or {})
        missing = next((r for r in self.rows if r["reference_output"] is None), None)
        if missing is not None and NEEDS_REFERENCE in capabilities_of(reward):
            raise ConfigError(f"reward {reward if isinstance(reward, str) else backend_name(reward)!r} judges each "
                              f"response against the row's reference_output, and prompts row {missing['row_index']} "
                              "has none; give every row a reference_output (a row's 'output' is not read as one) or "
                              "use a reward that needs none (e.g. reward_model, length)")
        if self.split == EVAL_SPLIT and JUDGES_PAIRS in capabilities_of(reward):
            warnings.warn(
                "AlpacaFarm env on the eval split with an annotator reward: training on these rewards trains on the "
                "test set (the 805 evaluation instructions, judged by the evaluator's judge); use a training split "
                "(unlabeled, sft, preference, val) for learning and keep 'eval' for evaluation",
                TrainingOnTestSetWarning, stacklevel=3)

    @property
    def reward_backend(self) -> Any:
        """The reward backend, built on first use (heavy models load here, not in ``__init__``) and shared in the
        process with every env of the same spec, kwargs and data dir."""
        if self._backend is None:
            self._backend = get_reward_backend(self.reward_spec, self.reward_kwargs, self.reward_context)
        return self._backend

    def _use_annotator(self, annotator: Any, annotator_kwargs: dict[str, Any] | None) -> None:
        """Compare with ``annotator`` (a spec for ``annotators.make_annotator``), built on first use; ``seed`` in
        ``annotator_kwargs`` offsets every comparison's seed (default 0). An unknown name fails here."""
        from ..annotators import check_annotator

        kwargs = dict(annotator_kwargs or {})
        self.annotator_seed = int(kwargs.pop("seed", 0))
        check_annotator(annotator, kwargs)
        self.annotator_spec, self.annotator_kwargs = annotator, kwargs

    @property
    def annotator(self) -> Any:
        """The pairwise envs' annotator, built on first use and shared in the process like a reward backend."""
        if self._backend is None:
            self._backend = get_annotator(self.annotator_spec, self.annotator_kwargs, self.reward_context)
        return self._backend

    # ---------------------------------------------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsT, dict[str, Any]]:
        """Start the next episode (each sub-env's, for a vector env).

        ``seed`` reseeds the env (``np_random``, the episode order and the reward seeds); the first reset without one
        uses the constructor's ``seed``. ``options={"index": k}`` starts on the k-th row of the env's selection (a
        vector env: one position per sub-env) without moving the episode order.

        Returns:
            observation: the first observation (the env's class docstring states its space).
            info: ``example_index`` (the row in the split) and ``dataset`` (the eval subset, or the split), plus
            what the env adds (the token env: ``prompt_tokens``, ``prompt_truncated``).
        """
        if seed is None and not self._started:
            seed = self.config.seed  # the constructor's seed fixes the order of an unseeded first reset
        super().reset(seed=seed)  # gym.Env / VectorEnv: seeds np_random
        if seed is not None or not self._started:
            self._order.restart(self.np_random)
            # a child stream of the env's seed: reward seeds never shift the episode order's draws
            seq = getattr(self.np_random.bit_generator, "seed_seq", None)
            child = seq.spawn(1)[0] if isinstance(seq, np.random.SeedSequence) else int(self.np_random.integers(2**63))
            self._noise_rng = np.random.default_rng(child)
        self._started = True
        self._current = self._positions(options or {})
        return self._begin(self._current)

    def _positions(self, options: dict[str, Any]) -> list[int]:
        """The rows the next episodes start on: ``options["index"]``, else the next ones of the episode order."""
        n = len(self.rows)
        if not self.batched:
            if "index" not in options:
                return [self._order.next()]
            k = int(options["index"])
            if not 0 <= k < n:
                raise IndexError(f"options['index']={k} out of range for {n} examples")
            return [k]
        if "index" not in options:
            return [self._order.next() for _ in range(self.num_envs)]
        idx = [int(i) for i in np.atleast_1d(options["index"])]
        if len(idx) != self.num_envs or not all(0 <= i < n for i in idx):
            raise ValueError(f"options['index'] needs {self.num_envs} positions in [0, {n})")
        return idx

    @abc.abstractmethod
    def _begin(self, positions: list[int]) -> tuple[ObsT, dict[str, Any]]:
        """Start episodes on the rows at ``positions``: return the observation and the info of ``reset``."""

    @property
    def current_row(self) -> dict[str, Any] | None:
        """The row of the running episode (a single env), or ``None`` before the first reset."""
        return None if self._current is None else self.rows[self._current[0]]

    @property
    def demonstrations(self) -> list[dict[str, str]]:
        """The split's demonstration rows in the env's selection: ``instruction``, ``input``, ``prompt`` (the
        AlpacaFarm template) and ``output`` (the split's reference output; on ``sft``, the supervised target). This is
        how supervised methods read their data through the env (never from the data dir)."""
        return [{**row_observation(r), "output": r["reference_output"]} for r in self.rows]

    # -------------------------------------------------------------------------------------------------- scoring
    def _scoring_context(self, n: int) -> RewardContext:
        """The context of a batch of ``n`` scored episodes: with one fresh seed each (``seed_mode="episode"``)."""
        if self._noise_rng is None:
            raise RuntimeError("call reset() before step()")
        if self.seed_mode != "episode":
            return self.reward_context
        return self.reward_context.with_episode_seeds(self._noise_rng.integers(0, 2**31 - 1, size=n))

    def _score(self, rows: Sequence[dict[str, Any]], responses: Sequence[str]) -> tuple[list[float], list[dict]]:
        """ONE batched reward call for ``responses`` to ``rows``. Returns the rewards and each episode's info: the
        backend's details plus ``reference_output``, ``response_length``, ``example_index``, ``dataset`` and
        ``reward_backend``."""
        backend = self.reward_backend
        scores, details = score_rows(backend, rows, responses, self._scoring_context(len(rows)))
        infos = []
        for row, response, detail in zip(rows, responses, details):
            info = copy.deepcopy(dict(detail))  # never hand out the backend's own objects
            info.update(reference_output=row["reference_output"], response_length=len(response),
                        example_index=row["row_index"], dataset=row["dataset"], reward_backend=backend_name(backend))
            infos.append(info)
        return scores, infos

    def _compare(self, rows: Sequence[dict[str, Any]], first: Sequence[str], second: Sequence[str]) -> list[Any]:
        """ONE annotation call: the annotator's :class:`~alpaca_farm_env.annotators.Annotation` of each pair."""
        from ..annotators import annotation_seeds

        seeds = self._scoring_context(len(rows)).episode_seeds
        return self.annotator.compare([r["instruction"] for r in rows], [r["input"] for r in rows], list(first),
                                      list(second), seed=annotation_seeds(self.annotator, self.annotator_seed,
                                                                          seeds, len(rows)))

    def _row_info(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"example_index": row["row_index"], "dataset": row["dataset"]}


def check_render_mode(env: Any, render_mode: str | None) -> None:
    """Refuse a ``render_mode`` that ``env.metadata["render_modes"]`` does not list."""
    modes = env.metadata.get("render_modes", [])
    if render_mode is not None and render_mode not in modes:
        raise ValueError(f"{type(env).__name__} render_mode must be one of {modes} or None, got {render_mode!r}")
    env.render_mode = render_mode


__all__ = ["AlpacaFarmEnvBase", "EpisodeConfig", "SEED_MODES", "backend_name", "check_render_mode",
           "row_observation"]
