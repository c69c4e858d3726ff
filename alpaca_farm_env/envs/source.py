"""Shared pieces of the environments: the prompt rows, the episode order, and the process-wide backends.

* :func:`load_rows` turns ``split`` / ``reference`` / ``indices`` / ``max_examples`` into rows with ``instruction``,
  ``input``, ``prompt`` (the AlpacaFarm template) and ``reference_output``.
* :class:`EpisodeOrder` hands out row indices: a permutation per epoch drawn from the env's ``np_random`` (so the
  order is a function of the ``reset(seed=...)`` seed), or the data order when ``shuffle=False``.
* :func:`get_reward_backend` / :func:`get_annotator` build a reward backend / an annotator once per process for a
  given string spec, kwargs and context, so that re-created envs (``check_env``, ``make_vec``, notebooks) share one
  loaded reward model / annotator.
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from ..annotators import make_annotator
from ..context import RewardContext, uses_context
# the rows live in the data layer (the judge's degenerate-response suite reads them too): re-exported for the envs
from ..data.rows import CUSTOM_SPLIT, EVAL_SPLIT, SPLIT_CHOICES, load_rows, prompt_rows  # noqa: F401
from ..rewards import REWARDS, make_reward, score_with_info
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


# ------------------------------------------------------------------------------------------------ reward backends
_BACKENDS: dict[str, Any] = {}
_BACKENDS_LOCK = threading.Lock()


def _shared(key: str, build: Any) -> Any:
    with _BACKENDS_LOCK:
        obj = _BACKENDS.get(key)
        if obj is None:
            obj = _BACKENDS[key] = build()
    return obj


def get_reward_backend(spec: Any, kwargs: dict[str, Any] | None = None, context: RewardContext | None = None) -> Any:
    """A reward backend for ``spec``; string specs are built once per process and shared (keyed on a digest of the
    spec, the kwargs, and the context's data dir for backends that declare ``USES_CONTEXT``). Instances are returned
    as is; classes and functions are built each call. ``context`` (its construction part: the data dir) reaches the
    backends that declare ``USES_CONTEXT``."""
    kwargs = dict(kwargs or {})
    context = None if context is None else context.for_construction()
    if not isinstance(spec, str):
        return make_reward(spec, context=context, **kwargs)
    seen = context.data_dir if context is not None and uses_context(REWARDS.resolve(spec)) else None
    key = digest({"spec": spec, "kwargs": kwargs, "data_dir": seen})
    return _shared(key, lambda: make_reward(spec, context=context, **kwargs))


def get_annotator(spec: Any, kwargs: dict[str, Any] | None = None, context: RewardContext | None = None) -> Any:
    """An annotator for ``spec``, shared in the process like :func:`get_reward_backend` (the pairwise envs' own)."""
    kwargs = dict(kwargs or {})
    context = None if context is None else context.for_construction()
    if not isinstance(spec, str):
        return make_annotator(spec, context=context, **kwargs)
    key = digest({"annotator": spec, "kwargs": kwargs, "data_dir": None if context is None else context.data_dir})
    return _shared(key, lambda: make_annotator(spec, context=context, **kwargs))


def clear_reward_cache() -> None:
    """Forget the shared backends (frees a loaded reward model once no env holds it)."""
    with _BACKENDS_LOCK:
        _BACKENDS.clear()


def cached_backend_count() -> int:
    """How many backends (and pairwise-env annotators) the process shares."""
    return len(_BACKENDS)


def score_rows(backend: Any, rows: Sequence[dict[str, Any]], responses: Sequence[str],
               context: RewardContext | None = None) -> tuple[list[float], list[dict]]:
    """One batched ``score_with_info`` call for ``responses`` to ``rows``; checks the backend's answer and returns
    ``(scores, details)``, one of each per response. ``context`` (the batch's episode seeds) reaches the backends that
    declare ``USES_CONTEXT``."""
    scores, details = score_with_info(
        backend,
        [r["prompt"] for r in rows],
        list(responses),
        instruction=[r["instruction"] for r in rows],
        input=[r["input"] for r in rows],
        reference_output=[r["reference_output"] for r in rows],
        context=context,
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
