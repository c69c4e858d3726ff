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
texts; the benchmark evaluates an agent by stepping the eval-split env with them.

What the benchmark does with an agent, in order (``benchmark/runner.py``):

1. builds it as ``factory(policy=..., **settings)``: the preset's ``methods.<name>`` entry, plus the preset's
   ``generation`` settings named in the class's optional ``GENERATION_KEYS`` (e.g. ``("max_new_tokens",
   "temperature")``; :class:`~alpaca_farm_env.agents.sft.BaseAgent` declares all five);
2. assigns ``evaluator`` (the evaluator's annotator spec: a method that reranks with or learns from a reward refuses
   one that judges like it, ``envs.reward_info.reward_judges_like``) and ``eval_hook`` (a callable that takes the
   agent and returns the win-rate of its current ``respond`` on a few eval instructions; a method that trains
   step-wise calls it at its eval steps and logs what it returns);
3. calls ``fit(envs, **stages)``, then reads ``describe()`` (its ``"reward"`` entry labels the method's row);
4. calls ``respond`` batch by batch on the eval split, and scores the responses with the eval env's reward.

Only ``name``, ``ENVS``, ``STAGES``, ``fit`` and ``respond`` are required of a user's agent: before ``fit`` the
benchmark sets ``evaluator``, ``eval_hook``, and -- where the agent lacks them -- ``history = []`` and a
``describe()`` that returns ``{}`` (:func:`attach`). A user's method implementing the two calls is registered like
the bundled ones (:func:`register_agent`).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

from ..registry import Registry

STAGES = ("policy", "preferences", "reward", "output_dir")

EvalHook = Callable[[Any], Mapping[str, float]]


@runtime_checkable
class Agent(Protocol):
    """What the benchmark reads and sets on an agent (see the module docstring for the order)."""

    name: str
    ENVS: ClassVar[dict[str, dict[str, Any]]]  # env name -> gym.make kwargs (with "id"); {} for none
    STAGES: ClassVar[tuple[str, ...]]  # which of the pipeline's stage products fit() takes
    evaluator: Any  # the benchmark's evaluator spec, assigned before fit (None outside the benchmark)
    eval_hook: EvalHook | None  # assigned before fit; step-wise trainers call it at their eval steps
    history: list[dict[str, Any]]  # per-step training statistics, in step order ([] for methods without steps)

    def fit(self, envs: Mapping[str, Any], **stages: Any) -> None: ...

    def respond(self, observations: Sequence[dict[str, str]]) -> list[str]: ...

    def describe(self) -> dict[str, Any]:
        """The settings that determine the outputs; a ``"reward"`` entry (short text) for a method that learns from
        or reranks with a reward."""
        ...


def attach(agent: Any, *, evaluator: Any, eval_hook: EvalHook | None) -> Any:
    """Assign the benchmark's ``evaluator`` and ``eval_hook`` to ``agent``, and give an agent that lacks them the
    protocol's defaults (``history = []``, a ``describe()`` returning ``{}``). Returns ``agent``."""
    agent.evaluator = evaluator
    agent.eval_hook = eval_hook
    if not hasattr(agent, "history"):
        agent.history = []
    if not callable(getattr(agent, "describe", None)):
        agent.describe = dict  # dict() -> {}
    return agent


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
