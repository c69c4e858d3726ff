"""The pairwise annotator protocol and registry.

``compare(instructions, inputs, outputs_1, outputs_2, *, seed)`` returns one :class:`Annotation` per pair, using
alpaca_eval's encoding: ``preference`` 1 = output_1 better, 2 = output_2 better, 1.5 = draw, ``None`` = unlabeled
(e.g. an unparseable completion: dropped and counted, never guessed).

Texts are cleaned on the way in (:func:`clean_pairs`): a surrogate, which UTF-8 cannot encode, is judged as
:func:`~alpaca_farm_env.utils.clean_text` resolves it (U+FFFD for a lone one), the same way by every annotator.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

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


def make_annotator(spec: Any, **kwargs: Any) -> PairwiseAnnotator:
    return ANNOTATORS.make(spec, **kwargs)


def list_annotators() -> list[str]:
    return ANNOTATORS.names()


def annotator_identity(spec: Any, **kwargs: Any) -> str:
    """A digest of what determines an annotator's judgments, for keying caches and run dirs: the class's
    ``identity_for(**kwargs)`` when it has one (computed without building the annotator, e.g. the distilled judges:
    configuration, feature spec, training data), an instance's ``identity``, else the spec and its arguments."""
    target = ANNOTATORS.resolve(spec)
    if not isinstance(target, type) and hasattr(target, "identity"):
        return str(target.identity)
    how = getattr(target, "identity_for", None)
    if how is not None:
        return str(how(**kwargs))
    return _fallback_identity(spec, target, kwargs)


def judgment_identity(spec: Any, **kwargs: Any) -> str:
    """Like :func:`annotator_identity`, but blind to pool semantics such as label noise: ``pooled`` and
    ``noisy_pooled`` are one judge. The evaluator guard of reranking and RL methods compares these."""
    target = ANNOTATORS.resolve(spec)
    if not isinstance(target, type) and hasattr(target, "judge_identity"):
        return str(target.judge_identity)
    how = getattr(target, "judge_identity_for", None)
    if how is not None:
        return str(how(**kwargs))
    return annotator_identity(spec, **kwargs)


def _fallback_identity(spec: Any, target: Any, kwargs: dict[str, Any]) -> str:
    from ..utils import digest

    name = spec if isinstance(spec, str) else f"{getattr(target, '__module__', '')}:{getattr(target, '__qualname__', repr(target))}"
    return digest({"spec": name, "kwargs": kwargs})[:16]


def with_data_dir(spec: Any, kwargs: dict[str, Any], data_dir: Any) -> dict[str, Any]:
    """``kwargs`` plus ``data_dir`` where the annotator takes one and none was given: the data dir of an env, a
    benchmark or ``evaluate`` reaches the annotator (the distilled judge reads its answer bank from it)."""
    from ..utils import accepts_kwarg

    if data_dir is not None and "data_dir" not in kwargs and accepts_kwarg(ANNOTATORS.resolve(spec), "data_dir"):
        return {**kwargs, "data_dir": data_dir}
    return dict(kwargs)
