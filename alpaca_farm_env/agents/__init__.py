"""AlpacaFarm methods acting against the env interface, and their registry."""
from .base import AGENTS, Agent, list_agents, make_agent, register_agent

__all__ = ["AGENTS", "Agent", "list_agents", "make_agent", "register_agent"]
