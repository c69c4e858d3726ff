"""What an env knows that a reward backend or an annotator may need: one typed :class:`RewardContext`.

A backend or an annotator that wants it declares the capability :data:`USES_CONTEXT` in its ``capabilities``
ClassVar; nothing inspects signatures. It then receives

* ``context=`` in its constructor: ``RewardContext(data_dir=...)`` -- what every env sharing the (process-wide,
  cached) backend has in common, e.g. the data dir the distilled judge reads its answer bank from;
* ``context=`` in ``score`` / ``score_with_info`` (reward backends only): the full context of the batch being
  scored -- the data dir, the env's ``split`` and one ``episode_seeds`` entry per response (``None`` when the env's
  ``seed_mode`` is ``"instruction"``).

Annotators receive the context only at construction; the episode seeds reach them through ``compare(seed=...)``
(see :func:`alpaca_farm_env.annotators.annotation_seeds`).

``make_reward(spec, context=...)``, ``make_annotator(spec, context=...)`` and the identity functions pass the context
to the classes that declare :data:`USES_CONTEXT` and leave every other backend alone. An explicit ``data_dir``
keyword wins over the context's.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, replace
from typing import Any, Sequence

USES_CONTEXT = "uses_context"  # capability: the constructor (and, for rewards, score) take ``context=``


@dataclass(frozen=True)
class RewardContext:
    """What the env knows about the episodes being scored."""

    data_dir: str | None = None
    """The env's local data directory (``None``: ``$ALPACA_FARM_DATA_DIR``, else the Hugging Face hub)."""
    split: str | None = None
    """The split the prompts come from (``"unlabeled"``, ``"eval"``, ...); ``None`` at construction."""
    episode_seeds: tuple[int, ...] | None = None
    """One seed per scored episode, drawn from the env's seeded RNG (``seed_mode="episode"``); ``None`` when the
    draws are keyed on the instruction (``seed_mode="instruction"``, or no env at all)."""

    @classmethod
    def of(cls, data_dir: str | os.PathLike | None = None, split: str | None = None) -> "RewardContext":
        """A context for ``data_dir`` (stored as a string) and ``split``."""
        return cls(data_dir=None if data_dir is None else str(data_dir), split=split)

    def for_construction(self) -> "RewardContext":
        """The part every env sharing one backend has in common (the data dir): what a backend is built with."""
        return RewardContext(data_dir=self.data_dir)

    def with_episode_seeds(self, seeds: Sequence[int] | None) -> "RewardContext":
        """This context for one scored batch: ``seeds`` (one per response, or ``None``)."""
        return replace(self, episode_seeds=None if seeds is None else tuple(int(s) for s in seeds))


def uses_context(target: Any) -> bool:
    """Whether a backend, an annotator or their class declares :data:`USES_CONTEXT`."""
    return USES_CONTEXT in (getattr(target, "capabilities", None) or ())


def data_dir_of(data_dir: str | os.PathLike | None, context: RewardContext | None) -> str | os.PathLike | None:
    """The data dir a context-aware class uses: an explicit ``data_dir``, else the context's (else ``None``)."""
    if data_dir is not None or context is None:
        return data_dir
    return context.data_dir


def with_context(target: Any, context: RewardContext | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus ``context`` when ``target`` (a class or a function, not an instance: an instance is used as
    it is) declares :data:`USES_CONTEXT` and none was given; ``kwargs`` unchanged otherwise."""
    if context is None or "context" in kwargs or not uses_context(target):
        return dict(kwargs)
    if not (isinstance(target, type) or inspect.isroutine(target)):
        return dict(kwargs)
    return {**kwargs, "context": context}


__all__ = ["USES_CONTEXT", "RewardContext", "data_dir_of", "uses_context", "with_context"]
