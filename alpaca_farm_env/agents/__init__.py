"""AlpacaFarm methods acting against the env interface, and their registry."""
from .base import AGENTS, Agent, list_agents, make_agent, register_agent
from . import sft  # noqa: F401  (registers "sft")
from . import best_of_n  # noqa: F401  (registers "best_of_n")
from . import expert_iteration  # noqa: F401  (registers "expert_iteration")
from . import binary_feedme  # noqa: F401  (registers "binary_feedme")
from . import binary_reward_conditioning  # noqa: F401  (registers "binary_reward_conditioning")
from . import dpo  # noqa: F401  (registers "dpo")
from . import ppo  # noqa: F401  (registers "ppo")
from . import quark  # noqa: F401  (registers "quark")
from . import grpo  # noqa: F401  (registers "grpo")
from . import rloo  # noqa: F401  (registers "rloo")
from . import online_dpo  # noqa: F401  (registers "online_dpo")

__all__ = ["AGENTS", "Agent", "list_agents", "make_agent", "register_agent"]
