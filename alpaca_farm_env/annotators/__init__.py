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

# The offline distilled judge lives in alpaca_farm_env.judge, a layer above this one. It is registered by path, so
# importing the annotators never imports the judge.
for _name, _cls in (("distilled_gpt4", "DistilledJudge"), ("pooled", "PooledJudge"), ("noisy_pooled", "NoisyPooledJudge")):
    register_annotator(_name, f"alpaca_farm_env.judge.judge:{_cls}")

__all__ = [
    "ANNOTATORS", "Annotation", "FunctionAnnotator", "PairwiseAnnotator", "check_lengths", "clean_pairs", "clean_rows",
    "list_annotators",
    "make_annotator", "register_annotator", "annotator_identity", "judgment_identity", "annotation_seeds",
    "check_annotator", "preference_score", "RewardContext", "USES_CONTEXT",
    "AnnotatorPool", "PoolMember", "AnnotatorMember",
]
