"""Simulated pairwise annotators: protocol, registry, AlpacaFarm pool semantics and backends."""
from .base import (
    ANNOTATORS,
    Annotation,
    FunctionAnnotator,
    PairwiseAnnotator,
    check_lengths,
    list_annotators,
    make_annotator,
    register_annotator,
)
from . import heuristics  # noqa: F401  (registers "longer")
from .pool import AnnotatorMember, AnnotatorPool, PoolMember
from . import openai_backend  # noqa: F401  (registers alpaca_farm_pool, alpaca_farm_pool_noisy, alpaca_farm_greedy_gpt4, openai_pool)
from . import distilled  # noqa: F401  (registers distilled_gpt4, pooled, noisy_pooled)

__all__ = [
    "ANNOTATORS", "Annotation", "FunctionAnnotator", "PairwiseAnnotator", "check_lengths", "list_annotators",
    "make_annotator", "register_annotator",
    "AnnotatorPool", "PoolMember", "AnnotatorMember",
]
