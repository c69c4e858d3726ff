"""The agent protocol and registry.

An agent is one AlpacaFarm method. It learns from envs and nothing else: ``fit(envs, **stages)`` receives the envs
it asked for (``ENVS``: a name -> ``gym.make`` keyword arguments, made by the caller with ``gym.make`` /
``gym.make_vec``; data reaches the agent only through them: observations, ``info``, and the documented env
attributes such as ``demonstrations``), plus the products of earlier pipeline stages it asked for (``STAGES``):

* ``policy``: the policy to start from (a :class:`~alpaca_farm_env.models.Policy`; the trained SFT policy for every
  method after SFT, as SFT10k in the paper);
* ``preferences``: pairs collected through ``AlpacaFarmPairwise-v0`` (``instruction, input, output_1, output_2,
  preference``, AlpacaFarm's layout);
* ``reward``: the reward spec of the trained reward model (``{"reward": "reward_model", "reward_kwargs": {...}}``);
* ``output_dir``: where the agent keeps checkpoints and what it trained (a rerun resumes from it).

``respond(observations)`` maps env observations (dicts with ``instruction``, ``input`` and ``prompt``) to response
texts; the benchmark evaluates an agent by stepping the eval-split env with them. A user's own method implements the
same two calls and is registered like the bundled ones.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

from ..registry import Registry

STAGES = ("policy", "preferences", "reward", "output_dir")


@runtime_checkable
class Agent(Protocol):
    name: str
    ENVS: ClassVar[dict[str, dict[str, Any]]]  # env name -> gym.make kwargs (with "id"); {} for none
    STAGES: ClassVar[tuple[str, ...]]  # which of the pipeline's stage products fit() takes

    def fit(self, envs: Mapping[str, Any], **stages: Any) -> None: ...

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
