"""Pluggable reward backends (text in, floats out) and their registry."""
from .base import (
    REWARDS,
    BaseReward,
    FunctionReward,
    RewardBackend,
    JUDGES_PAIRS,
    NEEDS_REFERENCE,
    SCORES_TEXT,
    SHARES_TRUNK,
    USES_CONTEXT,
    RewardContext,
    as_trl_reward_func,
    capabilities_of,
    check_reward,
    list_rewards,
    make_reward,
    register_reward,
    score_with_info,
)
from . import length  # noqa: F401  (registers "length")
from . import reward_model  # noqa: F401  (registers "reward_model")
from . import annotator_reward  # noqa: F401  (registers "annotator")

__all__ = [
    "JUDGES_PAIRS", "NEEDS_REFERENCE", "REWARDS", "SCORES_TEXT", "SHARES_TRUNK", "USES_CONTEXT", "RewardContext", "BaseReward", "capabilities_of", "FunctionReward", "RewardBackend", "as_trl_reward_func", "check_reward", "list_rewards",
    "make_reward", "register_reward", "score_with_info",
]
