"""alpaca-farm-env: AlpacaFarm (Dubois et al., 2023, arXiv 2305.14387) as Gymnasium environments.

``import alpaca_farm_env`` registers ``AlpacaFarm-v0`` and ``AlpacaFarmToken-v0`` with Gymnasium.
"""
from . import envs  # noqa: F401  (registers the environments)
from .agents import list_agents, make_agent, register_agent
from .annotators import list_annotators, make_annotator, register_annotator
from .data import format_prompt, load_eval_set, load_split
from .rewards import as_trl_reward_func, list_rewards, make_reward, register_reward

__version__ = "0.1.0"
__all__ = [
    "list_agents", "make_agent", "register_agent", "list_annotators", "make_annotator", "register_annotator",
    "format_prompt", "load_eval_set", "load_split", "as_trl_reward_func", "list_rewards", "make_reward",
    "register_reward", "__version__",
]
