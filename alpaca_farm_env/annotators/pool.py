"""AlpacaFarm pool semantics: one uniformly chosen member per example, randomised output order, label noise.

Contract for pool members (implemented by the OpenAI-compatible backend here and by the distilled judge)::

    class PoolMember(Protocol):
        name: str
        def annotate(self, rows: list[dict]) -> list[Annotation]: ...

``rows`` are dicts with keys ``instruction``, ``input``, ``output_1``, ``output_2`` **in the order presented** to the
member: the pool may have swapped the two outputs. The member returns one :class:`Annotation` per row, in the same
order, whose ``preference`` (1, 2, 1.5 or ``None`` = unparseable/unlabeled) and ``probability`` (P(output_2 better))
refer to that presented order. The pool un-swaps them. Members never see rows whose label the pool replaced with
noise, rows with identical outputs, or duplicate rows. A member may also define ``async aannotate(rows)``; when all
members of a pool do, the pool runs them concurrently (useful for the 13 API-backed members).

Semantics, each matching the reference implementation (tatsu-lab/alpaca_eval ``src/alpaca_eval/annotators/base.py``
``BaseAnnotator._preprocess`` and ``pairwise_evaluator.py`` ``PairwiseAnnotatorLocal._preprocess`` /
``SinglePairwiseAnnotator``, ``processors.py`` ``RandomSwitchTwoColumnsProcessor``; tatsu-lab/alpaca_farm
``src/alpaca_farm/auto_annotations/pairwise_annotators.py`` ``PairwiseAutoAnnotator`` with
``input_keys=("instruction", "input")``):

1. duplicate rows (same instruction, input, output_1, output_2) are annotated once (``drop_duplicates``);
2. member = ``random_seeded_choice("annotator" + instruction + input + str(seed), members)`` -- uniform;
3. if ``p_label_flip``: ``random_seeded_choice("noisy_preference" + instruction + input + str(seed),
   [None, 1, 2], weights=[1 - 2p, p, p])``; a non-None draw replaces the label (so with p=0.25 half the labels are a
   fair coin, i.e. 25% differ from the noise-free label). Those rows are never queried and never cached;
4. identical outputs get 1.5 (a draw) and are never queried -- this overrides the noise, as in the reference;
5. output order: ``random_seeded_choice("is_switched_outputs" + instruction + input + str(seed), [False, True])``;
   switched rows are shown to the member as (output_2, output_1) and the parsed preference is mapped back with
   ``3 - preference`` (probability ``1 - p``).

The hash behind ``random_seeded_choice`` is :func:`alpaca_farm_env.utils.stable_hash` (md5), never ``hash()``, so the
assignment is identical across runs and processes. ``seed`` in the keys is ``base_seed + seed`` (``compare``'s seed).
``compare`` also takes one seed per row (``per_example_seeds``): the envs give every episode its own, so a prompt
visited again draws its noise afresh, while a dataset annotated once with one seed keeps the reference's semantics.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
from collections import Counter
from typing import Any, Protocol, Sequence, runtime_checkable

from ..utils import random_seeded_choice
from .base import Annotation, check_lengths, clean_pairs, clean_rows

logger = logging.getLogger(__name__)

__all__ = ["PoolMember", "AnnotatorPool", "AnnotatorMember", "unswap"]


@runtime_checkable
class PoolMember(Protocol):
    """One simulated annotator inside a pool; see the module docstring for the row/preference contract."""

    name: str

    def annotate(self, rows: list[dict]) -> list[Annotation]: ...


class AnnotatorMember:
    """Adapts any :class:`PairwiseAnnotator` (e.g. ``longer``, a distilled judge) into a :class:`PoolMember`.

    The wrapped annotator is called on the rows exactly as presented, with ``seed``.
    """

    def __init__(self, annotator: Any, name: str | None = None, seed: int = 0):
        self.annotator = annotator
        self.name = name or getattr(annotator, "name", type(annotator).__name__)
        self.seed = seed

    def annotate(self, rows: list[dict]) -> list[Annotation]:
        if not rows:
            return []
        rows = clean_rows(rows)
        anns = self.annotator.compare(
            [r["instruction"] for r in rows], [r.get("input", "") for r in rows],
            [r["output_1"] for r in rows], [r["output_2"] for r in rows], seed=self.seed,
        )
        return [dataclasses.replace(a, annotator=self.name) for a in anns]


def unswap(a: Annotation) -> Annotation:
    """Map an annotation made on (output_2, output_1) back to (output_1, output_2): preference 3 - x, prob 1 - p."""
    pref = None if a.preference is None else 3.0 - float(a.preference)
    prob = None if a.probability is None else 1.0 - float(a.probability)
    return dataclasses.replace(a, preference=pref, probability=prob, extra={**a.extra, "is_switched_outputs": True})


class AnnotatorPool:
    """A :class:`~alpaca_farm_env.annotators.base.PairwiseAnnotator` over a pool of :class:`PoolMember`.

    ``p_label_flip=None`` (or 0) is the noise-free evaluation pool; ``p_label_flip=0.25`` is AlpacaFarm's training pool.
    After each ``compare`` call, ``last_stats`` holds counts (rows, unique, same_outputs, noisy, queried, unlabeled,
    per-member queries) and ``stats`` the running totals.
    """

    def __init__(
        self,
        members: Sequence[PoolMember],
        *,
        name: str = "pool",
        p_label_flip: float | None = None,
        is_randomize_output_order: bool = True,
        base_seed: int = 0,
    ):
        members = list(members)
        if not members:
            raise ValueError("AnnotatorPool needs at least one member")
        names = [m.name for m in members]
        dup = [n for n, c in Counter(names).items() if c > 1]
        if dup:
            raise ValueError(f"pool member names must be unique; duplicated: {dup}")
        for m in members:
            if not callable(getattr(m, "annotate", None)):
                raise TypeError(f"pool member {m!r} has no annotate(rows) method")
        if p_label_flip is not None and not (0.0 <= float(p_label_flip) <= 0.5):
            raise ValueError(f"p_label_flip must lie in [0, 0.5] (it is mixed in with weight 2*p), got {p_label_flip}")
        self.members = {m.name: m for m in members}
        self.name = name
        self.p_label_flip = None if p_label_flip is None else float(p_label_flip)
        self.is_randomize_output_order = is_randomize_output_order
        self.base_seed = int(base_seed)
        self.last_stats: dict[str, Any] = {}
        self.stats: Counter = Counter()

    # -- per-example keyed draws (public so tests and analyses can inspect them) --
    def _seed_str(self, instruction: str, inp: str, seed: int) -> str:
        return instruction + inp + str(self.base_seed + seed)

    def assign_member(self, instruction: str, inp: str, seed: int = 0) -> str:
        return random_seeded_choice("annotator" + self._seed_str(instruction, inp, seed), list(self.members))

    def noisy_label(self, instruction: str, inp: str, seed: int = 0) -> float | None:
        """The coin-flip label replacing the annotation for this example, or None when it is kept."""
        p = self.p_label_flip
        if not p:
            return None
        draw = random_seeded_choice(
            "noisy_preference" + self._seed_str(instruction, inp, seed), [None, 1.0, 2.0], weights=[1 - 2 * p, p, p]
        )
        return draw

    def is_switched(self, instruction: str, inp: str, seed: int = 0) -> bool:
        if not self.is_randomize_output_order:
            return False
        return bool(random_seeded_choice("is_switched_outputs" + self._seed_str(instruction, inp, seed), [False, True]))

    def set_noise(self, p_label_flip: float | None) -> None:
        """Same role as alpaca_eval's ``PairwiseAnnotator.set_noise``."""
        if p_label_flip is not None and not (0.0 <= float(p_label_flip) <= 0.5):
            raise ValueError(f"p_label_flip must lie in [0, 0.5], got {p_label_flip}")
        self.p_label_flip = None if p_label_flip is None else float(p_label_flip)

    # -- main entry point --
    per_example_seeds = True  # compare() accepts one seed per row

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed: int | Sequence[int] = 0) -> list[Annotation]:
        n = check_lengths(instructions, inputs, outputs_1, outputs_2)
        instructions, inputs, outputs_1, outputs_2 = clean_pairs(instructions, inputs, outputs_1, outputs_2)
        if isinstance(seed, (list, tuple)) or (hasattr(seed, "__len__") and not isinstance(seed, str)):
            seeds = [int(s) for s in seed]
            if len(seeds) != n:
                raise ValueError(f"{len(seeds)} seeds for {n} pairs")
        else:
            seeds = [int(seed)] * n
        # the seed is part of the row: the same pair under two seeds is two draws (deduplicated only within a seed)
        keys = [
            (str(i), "" if x is None else str(x), str(o1), str(o2), s)
            for i, x, o1, o2, s in zip(instructions, inputs, outputs_1, outputs_2, seeds)
        ]
        unique: dict[tuple, int] = {}
        for k in keys:
            unique.setdefault(k, len(unique))
        results: dict[tuple, Annotation] = {}
        to_query: dict[str, list[tuple[tuple, bool]]] = {m: [] for m in self.members}
        stats: Counter = Counter(rows=n, unique=len(unique))
        for k in unique:
            ins, inp, o1, o2, sd = k
            member = self.assign_member(ins, inp, sd)
            if o1 == o2:
                results[k] = Annotation(preference=1.5, probability=0.5, annotator=member, extra={"is_same_outputs": True})
                stats["same_outputs"] += 1
                continue
            noisy = self.noisy_label(ins, inp, sd)
            if noisy is not None:
                # a coin, not a judgment: no P(output_2 better) to report (a reward on probabilities scores the coin)
                results[k] = Annotation(preference=noisy, probability=None, annotator=member, is_noisy_label=True)
                stats["noisy"] += 1
                continue
            to_query[member].append((k, self.is_switched(ins, inp, sd)))

        jobs = {m: items for m, items in to_query.items() if items}
        answers = self._run_members(jobs)
        for m, items in jobs.items():
            anns = answers[m]
            if len(anns) != len(items):
                raise RuntimeError(f"pool member {m!r} returned {len(anns)} annotations for {len(items)} rows")
            stats[f"queried:{m}"] += len(items)
            stats["queried"] += len(items)
            for (k, switched), a in zip(items, anns):
                if not isinstance(a, Annotation):
                    a = Annotation(preference=None if a is None else float(a))
                if not a.annotator:
                    a = dataclasses.replace(a, annotator=m)
                a = unswap(a) if switched else dataclasses.replace(a, extra={**a.extra, "is_switched_outputs": False})
                if a.preference is None:
                    stats["unlabeled"] += 1
                results[k] = a
        self.last_stats = dict(stats)
        self.stats.update(stats)
        if stats["unlabeled"]:
            logger.warning("%s: %d of %d queried pairs were unparseable and are left unlabeled (never guessed)",
                           self.name, stats["unlabeled"], stats["queried"])
        out, seen = [], set()
        for k in keys:
            a = results[k]
            # duplicates share one annotation; later copies are fresh objects flagged as such
            out.append(a if k not in seen else dataclasses.replace(a, extra={**a.extra, "is_duplicate": True}))
            seen.add(k)
        return out

    def _rows(self, items: list[tuple[tuple, bool]]) -> list[dict]:
        rows = []
        for (ins, inp, o1, o2, _), switched in items:
            if switched:
                o1, o2 = o2, o1
            rows.append({"instruction": ins, "input": inp, "output_1": o1, "output_2": o2})
        return rows

    def _run_members(self, jobs: dict[str, list[tuple[tuple, bool]]]) -> dict[str, list[Annotation]]:
        members = {m: self.members[m] for m in jobs}
        if len(members) > 1 and all(callable(getattr(mb, "aannotate", None)) for mb in members.values()):
            async def _all():
                coros = [members[m].aannotate(self._rows(items)) for m, items in jobs.items()]
                return dict(zip(jobs, await asyncio.gather(*coros)))

            return _run_coro(_all())
        return {m: list(members[m].annotate(self._rows(items))) for m, items in jobs.items()}

    def __repr__(self) -> str:
        return (f"AnnotatorPool(name={self.name!r}, members={list(self.members)}, p_label_flip={self.p_label_flip}, "
                f"is_randomize_output_order={self.is_randomize_output_order}, base_seed={self.base_seed})")


def _run_coro(coro):
    """Run a coroutine from sync code on the process's persistent annotation loop (a daemon thread), also when
    called inside a running event loop (e.g. a notebook). One loop for the whole process lets an API backend keep its
    client and open connections from one call to the next (a new loop per call meant a new client, new TLS
    handshakes and new connections every time; docs/performance.md, P5)."""
    import concurrent.futures

    loop = _annotation_loop()
    if threading.current_thread().name == _LOOP_THREAD:  # called from a coroutine on that loop: it would deadlock
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return ex.submit(asyncio.run, coro).result()
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:  # interrupted (Ctrl-C) or failed: do not leave the coroutine running in the background
        future.cancel()
        with contextlib.suppress(concurrent.futures.CancelledError, concurrent.futures.TimeoutError, Exception):
            future.result(timeout=5)
        raise


_LOOP: dict[str, Any] = {}
_LOOP_THREAD = "alpaca-farm-annotation-loop"
_LOOP_LOCK = threading.Lock()


def _annotation_loop() -> asyncio.AbstractEventLoop:
    """The process's annotation event loop, started on first use in a daemon thread (again after a fork)."""
    with _LOOP_LOCK:
        loop = _LOOP.get("loop")
        if loop is None or _LOOP.get("pid") != os.getpid() or not loop.is_running():
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name=_LOOP_THREAD, daemon=True).start()
            started.wait()
            _LOOP.update(loop=loop, pid=os.getpid())
        return loop
