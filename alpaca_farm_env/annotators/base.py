"""The pairwise annotator protocol and registry.

``compare(instructions, inputs, outputs_1, outputs_2, *, seed)`` returns one :class:`Annotation` per pair, using
alpaca_eval's encoding: ``preference`` 1 = output_1 better, 2 = output_2 better, 1.5 = draw, ``None`` = unlabeled
(e.g. an unparseable completion: dropped and counted, never guessed).

Sign convention: every reward the package derives from a preference is the reward of output_2,
:func:`preference_score` = P(output_2 preferred) = ``preference - 1`` (as ``probability`` is P(output_2 better));
see docs/envs.md.

An annotator that needs what the env knows (the data dir of the distilled judge's answer bank) declares
``capabilities = frozenset({USES_CONTEXT})`` and takes ``context``
(:class:`~alpaca_farm_env.context.RewardContext`) in its constructor (and in ``identity_for``, when it has one);
:func:`make_annotator` and the identity functions pass it to those annotators only.

Texts are cleaned on the way in (:func:`clean_pairs`): a surrogate, which UTF-8 cannot encode, is judged as
:func:`~alpaca_farm_env.utils.clean_text` resolves it (U+FFFD for a lone one), the same way by every annotator.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from ..context import RewardContext, uses_context, with_context
from ..registry import Registry


@dataclass
class Annotation:
    preference: float | None
    probability: float | None = None  # P(output_2 is better), where the backend has one
    annotator: str = ""
    raw_completion: str | None = None
    cost: float = 0.0
    from_cache: bool = False
    is_noisy_label: bool = False  # label replaced by a coin flip (p_label_flip); never queried, never cached
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class PairwiseAnnotator(Protocol):
    name: str

    def compare(
        self,
        instructions: Sequence[str],
        inputs: Sequence[str],
        outputs_1: Sequence[str],
        outputs_2: Sequence[str],
        *,
        seed: int = 0,
    ) -> list[Annotation]: ...


def check_lengths(instructions, inputs, outputs_1, outputs_2) -> int:
    n = len(instructions)
    if not (len(inputs) == len(outputs_1) == len(outputs_2) == n):
        raise ValueError(
            f"compare() needs equal lengths, got instructions={n}, inputs={len(inputs)}, "
            f"outputs_1={len(outputs_1)}, outputs_2={len(outputs_2)}"
        )
    return n


def clean_pairs(instructions, inputs, outputs_1, outputs_2) -> tuple[list, list, list, list]:
    """The four columns as lists, each text passed through :func:`~alpaca_farm_env.utils.clean_text` (surrogates,
    which UTF-8 cannot encode, resolved; U+FFFD for a lone one). Every annotator calls it first in ``compare``, so a
    text with a lone surrogate is judged exactly like the same text with U+FFFD in its place, by every judge."""
    from ..utils import clean_text

    return tuple([clean_text(t) for t in col] for col in (instructions, inputs, outputs_1, outputs_2))  # type: ignore[return-value]


def clean_rows(rows: Sequence[dict]) -> list[dict]:
    """:func:`clean_pairs` for the pool-member protocol: copies of ``rows`` with their texts cleaned."""
    from ..utils import clean_text

    return [{k: clean_text(v) for k, v in r.items()} for r in rows]


class FunctionAnnotator:
    """Adapts ``f(instructions, inputs, outputs_1, outputs_2, seed=...) -> list[preference | Annotation]``."""

    def __init__(self, fn: Callable[..., Sequence[Any]], name: str | None = None, **fixed_kwargs: Any):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")
        self.fixed_kwargs = fixed_kwargs

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed: int = 0) -> list[Annotation]:
        n = check_lengths(instructions, inputs, outputs_1, outputs_2)
        instructions, inputs, outputs_1, outputs_2 = clean_pairs(instructions, inputs, outputs_1, outputs_2)
        out = list(self.fn(instructions, inputs, outputs_1, outputs_2, seed=seed, **self.fixed_kwargs))
        if len(out) != n:
            raise ValueError(f"annotator function {self.name!r} returned {len(out)} annotations for {n} pairs")
        return [a if isinstance(a, Annotation) else Annotation(preference=None if a is None else float(a), annotator=self.name) for a in out]


ANNOTATORS: Registry[PairwiseAnnotator] = Registry(
    "annotator",
    "alpaca_farm_env.annotators",
    is_instance=lambda x: hasattr(x, "compare") and callable(getattr(x, "compare")),
    wrap_function=FunctionAnnotator,
)


def register_annotator(name: str, factory=None, *, override: bool = False):
    """Register an annotator class (or comparison function) under ``name``."""
    return ANNOTATORS.register(name, factory, override=override)


def make_annotator(spec: Any, *, context: RewardContext | None = None, **kwargs: Any) -> PairwiseAnnotator:
    """Build an annotator from a name, ``"module:attr"``, a class, a comparison function or an instance (returned as
    is). ``context`` (:class:`~alpaca_farm_env.context.RewardContext`) reaches the annotators that declare
    ``USES_CONTEXT`` in their ``capabilities`` (the distilled judges: the data dir of their answer bank)."""
    target = ANNOTATORS.resolve(spec)
    return ANNOTATORS.make(target, **with_context(target, context, kwargs))


def list_annotators() -> list[str]:
    """The registered annotator names (and those published through entry points)."""
    return ANNOTATORS.names()


def annotator_identity(spec: Any, *, context: RewardContext | None = None, **kwargs: Any) -> str:
    """A digest of what determines an annotator's judgments, for keying caches and run dirs: the class's
    ``identity_for(**kwargs)`` when it has one (computed without building the annotator, e.g. the distilled judges:
    configuration, feature spec, training data), an instance's ``identity``, else the spec and its arguments.
    ``context`` counts as it does in :func:`make_annotator`: only for annotators that declare ``USES_CONTEXT``."""
    target = ANNOTATORS.resolve(spec)
    if not isinstance(target, type) and hasattr(target, "identity"):
        return str(target.identity)
    how = getattr(target, "identity_for", None)
    if how is not None:
        return str(how(**with_context(target, context, kwargs)))
    return _fallback_identity(spec, target, kwargs, context)


def judgment_identity(spec: Any, *, context: RewardContext | None = None, **kwargs: Any) -> str:
    """Like :func:`annotator_identity`, but blind to pool semantics such as label noise: ``pooled`` and
    ``noisy_pooled`` are one judge. The evaluator guard of reranking and RL methods compares these."""
    target = ANNOTATORS.resolve(spec)
    if not isinstance(target, type) and hasattr(target, "judge_identity"):
        return str(target.judge_identity)
    how = getattr(target, "judge_identity_for", None)
    if how is not None:
        return str(how(**with_context(target, context, kwargs)))
    return annotator_identity(spec, context=context, **kwargs)


def _fallback_identity(spec: Any, target: Any, kwargs: dict[str, Any], context: RewardContext | None) -> str:
    from ..utils import digest

    name = spec if isinstance(spec, str) else f"{getattr(target, '__module__', '')}:{getattr(target, '__qualname__', repr(target))}"
    if uses_context(target) and context is not None and context.data_dir is not None and "data_dir" not in kwargs:
        kwargs = {**kwargs, "data_dir": context.data_dir}  # the data dir it reads is part of what it judges with
    return digest({"spec": name, "kwargs": kwargs})[:16]


def check_annotator(spec: Any, kwargs: dict[str, Any], where: str = "annotator_kwargs") -> None:
    """Fail now on an annotator that cannot be built, without building it: an unknown name raises
    :class:`~alpaca_farm_env.registry.UnknownSpecError`, unknown or mistyped keyword arguments a ``ConfigError``."""
    from ..validation import check_call

    target = ANNOTATORS.resolve(spec)
    if isinstance(spec, str):
        check_call(target, kwargs, f"annotator {spec!r}", prefix=f"{where}.", what=f"annotator {spec!r}")
    requirements = getattr(target, "check_requirements", None) if isinstance(target, type) else None
    if requirements is not None:
        requirements(**kwargs)  # a package it reads is missing: fail now, naming the pip command, not at the first step


def preference_score(a: Annotation) -> float:
    """The preference as a reward for output_2 (the package's one sign convention): P(output_2 preferred) read from
    the label, ``preference - 1`` (1 -> 0.0, 2 -> 1.0, a draw 0.5), and 0.5 for an unlabeled pair."""
    return 0.5 if a.preference is None else float(a.preference) - 1.0


def annotation_seeds(annotator: Any, seed: int, episode_seeds: Sequence[int] | None, n: int) -> int | list[int]:
    """The ``seed`` argument of ``annotator.compare`` for ``n`` pairs: ``seed`` alone without episode seeds (the
    draws are keyed on the instruction, as alpaca_eval's); else ``seed + episode_seed`` per pair for annotators that
    take one seed per row (``per_example_seeds``: a pool), and one seed derived from them all for the others (fresh
    on every visit all the same)."""
    from ..utils import stable_hash

    if episode_seeds is None:
        return seed
    seeds = [seed + int(s) for s in episode_seeds]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} episode seeds for {n} pairs")
    if getattr(annotator, "per_example_seeds", False):
        return seeds
    return stable_hash("batch", *seeds)
