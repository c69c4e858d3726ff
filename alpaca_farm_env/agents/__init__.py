"""AlpacaFarm methods acting against the env interface, and their registry."""
from .base import AGENTS, Agent, list_agents, make_agent, register_agent
from . import sft  # noqa: F401  (registers "sft")
from . import best_of_n  # noqa: F401  (registers "best_of_n")

__all__ = ["AGENTS", "Agent", "list_agents", "make_agent", "register_agent"]
