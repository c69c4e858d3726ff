"""The agent protocol and registry.

An agent is one AlpacaFarm method. ``fit(env)`` trains it against the env interface (methods that do not train,
like ``sft`` and ``best_of_n``, do nothing); ``respond(observations)`` maps env observations (dicts with
``instruction``, ``input`` and ``prompt``) to response texts, which is what the benchmark evaluates.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from ..registry import Registry


@runtime_checkable
class Agent(Protocol):
    name: str

    def fit(self, env: Any = None, **kwargs: Any) -> None: ...

    def respond(self, observations: Sequence[dict[str, str]]) -> list[str]: ...


AGENTS: Registry[Agent] = Registry(
    "agent",
    "alpaca_farm_env.agents",
    is_instance=lambda x: hasattr(x, "respond") and callable(getattr(x, "respond")),
)


def register_agent(name: str, factory=None, *, override: bool = False):
    return AGENTS.register(name, factory, override=override)


def make_agent(spec: Any, **kwargs: Any) -> Agent:
    return AGENTS.make(spec, **kwargs)


def list_agents() -> list[str]:
    return AGENTS.names()
