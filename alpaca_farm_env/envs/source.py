"""Shared pieces of the environments: the prompt rows, the episode order, and the reward-backend cache.

* :func:`load_rows` turns ``split`` / ``reference`` / ``indices`` / ``max_examples`` into rows with ``instruction``,
  ``input``, ``prompt`` (the AlpacaFarm template) and ``reference_output``.
* :class:`EpisodeOrder` hands out row indices: a permutation per epoch drawn from the env's ``np_random`` (so the
  order is a function of the ``reset(seed=...)`` seed), or the data order when ``shuffle=False``.
* :func:`get_reward_backend` builds a backend once per process for a given string spec and kwargs, so that
  re-created envs (``check_env``, ``make_vec``, notebooks) share one loaded reward model / annotator.
"""
from __future__ import annotations

import threading
import warnings
from typing import Any, Sequence

import numpy as np

from ..errors import TrainingOnTestSetWarning
# the rows live in the data layer (the judge's degenerate-response suite reads them too): re-exported for the envs
from ..data.rows import EVAL_SPLIT, SPLIT_CHOICES, load_rows  # noqa: F401
from ..rewards import check_reward, make_reward, score_with_info
from ..utils import digest


class EpisodeOrder:
    """Cycles through ``n`` rows, one epoch at a time.

    ``restart(rng)`` starts a new epoch sequence from ``rng`` (the env's ``np_random`` right after a seeded reset), so
    the sequence of examples is a deterministic function of the seed. Without shuffling, rows come in data order.
    """

    def __init__(self, n: int, shuffle: bool = True):
        if n < 1:
            raise ValueError("EpisodeOrder needs at least one row")
        self.n, self.shuffle = n, shuffle
        self._perm: np.ndarray = np.arange(n)
        self._pos = 0
        self._rng: np.random.Generator | None = None

    def restart(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._pos = 0
        self._perm = rng.permutation(self.n) if self.shuffle else np.arange(self.n)

    def next(self) -> int:
        if self._pos >= self.n:  # new epoch: reshuffle from the same generator
            self._pos = 0
            if self.shuffle and self._rng is not None:
                self._perm = self._rng.permutation(self.n)
        i = int(self._perm[self._pos])
        self._pos += 1
        return i


class EpisodeSource:
    """What the three envs share: their rows, the seeded episode order, the per-episode reward seeds and the lazily
    built reward backend.

    Mixed in before ``gym.Env`` / ``VectorEnv``; ``_begin_reset(seed)`` gives the seed to pass to ``super().reset``
    and ``_after_seed(seed)`` restarts the order from the env's fresh ``np_random``.

    Reward seeds. Every scored episode gets its own seed (``_episode_seeds``), drawn from a generator spawned from the
    env's ``np_random`` at seeding, and passed to the backend as the ``episode_seed`` column. The annotator reward keys
    its label noise and pool-member choice on it, so revisiting a prompt with the same response draws fresh noise,
    as a human labeller pool would; the sequence is a function of the ``reset(seed=...)`` seed. (A dataset annotated
    once, such as collected preferences, keeps alpaca_eval's instruction-keyed draws: see docs/annotators.md.)
    """

    def _init_source(self, rows: list[dict[str, Any]], *, reward: Any, reward_kwargs: dict[str, Any] | None,
                     shuffle: bool, seed: int | None, split: str = "", data_dir: Any = None) -> None:
        # an unknown reward (or annotator) name fails here, not at the first step; the backend itself stays lazy
        check_reward(reward, **dict(reward_kwargs or {}))
        self.rows = rows
        self.reward_spec = reward
        # the env's data dir reaches the backend, and through it the annotator (the judge's answer bank)
        self.reward_kwargs = _with_data_dir(reward, dict(reward_kwargs or {}), data_dir)
        self._backend: Any = None
        self._order = EpisodeOrder(len(rows), shuffle=shuffle)
        self._default_seed = seed
        self._started = False
        self._noise_rng: np.random.Generator | None = None
        if split == EVAL_SPLIT and _is_annotator_reward(reward):
            warnings.warn(
                "AlpacaFarm env on the eval split with an annotator reward: training on these rewards trains on the "
                "test set (the 805 evaluation instructions, judged by the evaluator's judge); use a training split "
                "(unlabeled, sft, preference, val) for learning and keep 'eval' for evaluation",
                TrainingOnTestSetWarning, stacklevel=3)

    @property
    def demonstrations(self) -> list[dict[str, str]]:
        """The split's demonstration rows in the env's selection: ``instruction``, ``input``, ``prompt`` (the
        AlpacaFarm template) and ``output`` (the split's reference output; on ``sft``, the supervised target). This is
        how supervised methods read their data through the env (never from the data dir)."""
        return [{"instruction": r["instruction"], "input": r["input"], "prompt": r["prompt"],
                 "output": r["reference_output"]} for r in self.rows]

    @property
    def reward_backend(self) -> Any:
        """The reward backend, built on first use (heavy models load here, not in ``__init__``)."""
        if self._backend is None:
            self._backend = get_reward_backend(self.reward_spec, self.reward_kwargs)
        return self._backend

    def _begin_reset(self, seed: int | None) -> int | None:
        if seed is None and not self._started and self._default_seed is not None:
            return self._default_seed  # the constructor's seed fixes the order of an unseeded first reset
        return seed

    def _after_seed(self, seed: int | None) -> None:
        if seed is not None or not self._started:
            self._order.restart(self.np_random)
            # a child stream of the env's seed: reward seeds never shift the episode order's draws
            seq = getattr(self.np_random.bit_generator, "seed_seq", None)
            child = seq.spawn(1)[0] if isinstance(seq, np.random.SeedSequence) else int(self.np_random.integers(2**63))
            self._noise_rng = np.random.default_rng(child)
        self._started = True

    def _episode_seeds(self, n: int) -> list[int]:
        """One fresh reward seed per episode being scored."""
        if self._noise_rng is None:
            raise RuntimeError("call reset() before step()")
        return [int(s) for s in self._noise_rng.integers(0, 2**31 - 1, size=n)]


def _is_annotator_reward(spec: Any) -> bool:
    from ..rewards.annotator_reward import AnnotatorReward
    from ..rewards.base import REWARDS

    target = REWARDS.resolve(spec) if isinstance(spec, str) else spec
    return isinstance(target, AnnotatorReward) or (isinstance(target, type) and issubclass(target, AnnotatorReward))


def _with_data_dir(spec: Any, kwargs: dict[str, Any], data_dir: Any) -> dict[str, Any]:
    from ..rewards.base import REWARDS
    from ..utils import accepts_kwarg

    if data_dir is None or "data_dir" in kwargs or not isinstance(spec, str):
        return kwargs
    target = REWARDS.resolve(spec)
    return {**kwargs, "data_dir": str(data_dir)} if accepts_kwarg(target, "data_dir") else kwargs


# ------------------------------------------------------------------------------------------------ reward backends
_BACKENDS: dict[str, Any] = {}
_BACKENDS_LOCK = threading.Lock()


def _backend_key(spec: str, kwargs: dict[str, Any]) -> str:
    return digest({"spec": spec, "kwargs": kwargs})


def get_reward_backend(spec: Any, kwargs: dict[str, Any] | None = None) -> Any:
    """A reward backend for ``spec``; string specs are built once per process and shared (keyed on a digest of
    ``(spec, kwargs)``). Instances are returned as is; classes and functions are built each call."""
    kwargs = dict(kwargs or {})
    if not isinstance(spec, str):
        return make_reward(spec, **kwargs)
    key = _backend_key(spec, kwargs)
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(key)
        if backend is None:
            backend = make_reward(spec, **kwargs)
            _BACKENDS[key] = backend
    return backend


def clear_reward_cache() -> None:
    """Forget the shared backends (frees a loaded reward model once no env holds it)."""
    with _BACKENDS_LOCK:
        _BACKENDS.clear()


def cached_backend_count() -> int:
    return len(_BACKENDS)


def score_rows(backend: Any, rows: Sequence[dict[str, Any]], responses: Sequence[str],
               episode_seeds: Sequence[int] | None = None) -> tuple[list[float], list[dict]]:
    """One batched ``score_with_info`` call for ``responses`` to ``rows``; checks the backend's answer.
    ``episode_seeds`` (one per row) reach the backend as the ``episode_seed`` column."""
    extra = {} if episode_seeds is None else {"episode_seed": list(episode_seeds)}
    scores, details = score_with_info(
        backend,
        [r["prompt"] for r in rows],
        list(responses),
        instruction=[r["instruction"] for r in rows],
        input=[r["input"] for r in rows],
        reference_output=[r["reference_output"] for r in rows],
        **extra,
    )
    scores = [float(s) for s in scores]
    details = list(details)
    name = getattr(backend, "name", type(backend).__name__)
    if len(scores) != len(responses) or len(details) != len(responses):
        raise ValueError(
            f"reward backend {name!r} returned {len(scores)} scores and {len(details)} details for {len(responses)} responses"
        )
    if not all(np.isfinite(scores)):
        raise ValueError(f"reward backend {name!r} returned a non-finite score: {scores}")
    return scores, details
