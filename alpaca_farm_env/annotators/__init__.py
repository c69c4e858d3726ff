"""Simulated pairwise annotators: protocol, registry, AlpacaFarm pool semantics and backends."""
from .base import (
    ANNOTATORS,
    Annotation,
    FunctionAnnotator,
    PairwiseAnnotator,
    check_lengths,
    clean_pairs,
    clean_rows,
    list_annotators,
    annotation_seeds,
    annotator_identity,
    check_annotator,
    judgment_identity,
    make_annotator,
    preference_score,
    register_annotator,
)
from ..context import USES_CONTEXT, RewardContext
from . import heuristics  # noqa: F401  (registers "longer")
from .pool import AnnotatorMember, AnnotatorPool, PoolMember
from . import openai_backend  # noqa: F401  (registers alpaca_farm_pool, alpaca_farm_pool_noisy, alpaca_farm_greedy_gpt4, openai_pool)

# The distilled judge (distilled_gpt4, pooled, noisy_pooled) registers itself in alpaca_farm_env/judge/__init__.py.

__all__ = [
    "ANNOTATORS", "Annotation", "FunctionAnnotator", "PairwiseAnnotator", "check_lengths", "clean_pairs", "clean_rows",
    "list_annotators",
    "make_annotator", "register_annotator", "annotator_identity", "judgment_identity", "annotation_seeds",
    "check_annotator", "preference_score", "RewardContext", "USES_CONTEXT",
    "AnnotatorPool", "PoolMember", "AnnotatorMember",
]
