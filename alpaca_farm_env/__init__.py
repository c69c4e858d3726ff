"""alpaca-farm-env: AlpacaFarm (Dubois et al., 2023, arXiv 2305.14387) as Gymnasium environments.

``import alpaca_farm_env`` registers ``AlpacaFarm-v0`` and ``AlpacaFarmToken-v0`` with Gymnasium.
"""
from typing import Any

from . import envs  # noqa: F401  (registers the environments)
from .annotators import list_annotators, make_annotator, register_annotator
from . import judge  # noqa: F401  (registers distilled_gpt4, pooled, noisy_pooled; loads the judge lazily)
from .data import format_prompt, load_eval_set, load_split

__version__ = "0.1.0"
__all__ = [
    "list_agents", "make_agent", "register_agent", "list_annotators", "make_annotator", "register_annotator",
    "format_prompt", "load_eval_set", "load_split", "as_trl_reward_func", "list_rewards", "make_reward",
    "register_reward", "as_trl_dataset", "__version__",
]


# The agents (every method's trainer) and the rewards (the reward model) import torch, ~1 s: they load on first use
# of these names, not on import (docs/performance.md). Making an env imports the rewards it needs.
_LAZY = {"list_agents": "agents", "make_agent": "agents", "register_agent": "agents",
         "as_trl_reward_func": "rewards", "list_rewards": "rewards", "make_reward": "rewards",
         "register_reward": "rewards", "as_trl_dataset": "envs"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in ("agents", "rewards"):  # `alpaca_farm_env.agents` without importing it first, as before
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
