"""The pairwise annotator protocol and registry.

``compare(instructions, inputs, outputs_1, outputs_2, *, seed)`` returns one :class:`Annotation` per pair, using
alpaca_eval's encoding: ``preference`` 1 = output_1 better, 2 = output_2 better, 1.5 = draw, ``None`` = unlabeled
(e.g. an unparseable completion: dropped and counted, never guessed).
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


class FunctionAnnotator:
    """Adapts ``f(instructions, inputs, outputs_1, outputs_2, seed=...) -> list[preference | Annotation]``."""

    def __init__(self, fn: Callable[..., Sequence[Any]], name: str | None = None, **fixed_kwargs: Any):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")
        self.fixed_kwargs = fixed_kwargs

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed: int = 0) -> list[Annotation]:
        n = check_lengths(instructions, inputs, outputs_1, outputs_2)
        out = list(self.fn(list(instructions), list(inputs), list(outputs_1), list(outputs_2), seed=seed, **self.fixed_kwargs))
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
