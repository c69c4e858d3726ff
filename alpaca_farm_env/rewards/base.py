"""Reward backends: text in, floats out.

A backend implements ``score(prompts, responses, **row) -> list[float]``; ``row`` carries per-example columns as
lists of the same length (``instruction``, ``input``, ``reference_output``). Backends never see token ids, so the
policy and the reward model may use different tokenizers. A backend may also return per-example details from
``score_with_info`` (the env puts them in ``info``).

``capabilities`` (a ClassVar) declares what else a backend offers: :data:`SCORES_TEXT` (every backend),
:data:`SHARES_TRUNK`, :data:`JUDGES_PAIRS`, :data:`NEEDS_REFERENCE` (an env whose rows lack a reference output
refuses it at construction) and :data:`~alpaca_farm_env.context.USES_CONTEXT` (it takes
``context=``, a :class:`~alpaca_farm_env.context.RewardContext`, in its constructor and in ``score`` /
``score_with_info``). Callers ask :func:`capabilities_of`; nothing is recognised by ``isinstance`` or by its
signature. See docs/rewards.md.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Protocol, Sequence, runtime_checkable

from ..context import USES_CONTEXT, RewardContext, uses_context, with_context
from ..registry import Registry


@runtime_checkable
class RewardBackend(Protocol):
    name: str

    def score(self, prompts: Sequence[str], responses: Sequence[str], **row: Sequence[Any]) -> list[float]: ...


SCORES_TEXT = "scores_text"  # score(prompts, responses, **row) on text (every backend)
# USES_CONTEXT (alpaca_farm_env.context): the constructor and score take ``context=``, a RewardContext
SHARES_TRUNK = "shares_trunk"  # holds ``model`` (a transformer with a trunk) and ``tokenizer`` PPO may share
JUDGES_PAIRS = "judges_pairs"  # an annotator turned into a reward (``annotator``): compared by judgment identity
NEEDS_REFERENCE = "needs_reference"  # scores a response against row["reference_output"]: an env refuses rows without


class BaseReward(ABC):
    """Convenience base: subclasses implement ``score``; ``score_with_info`` adds no details unless overridden.
    ``capabilities`` declares what else the backend offers (see :func:`capabilities_of`)."""

    name = "reward"
    capabilities: ClassVar[frozenset[str]] = frozenset({SCORES_TEXT})

    @abstractmethod
    def score(self, prompts: Sequence[str], responses: Sequence[str], **row: Sequence[Any]) -> list[float]:
        """One float per response."""

    def score_with_info(self, prompts, responses, **row) -> tuple[list[float], list[dict[str, Any]]]:
        scores = self.score(prompts, responses, **row)
        return scores, [{"score": s} for s in scores]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FunctionReward(BaseReward):
    """Adapts a plain ``f(prompts, responses, **row) -> list[float]`` into a backend."""

    def __init__(self, fn: Callable[..., Sequence[float]], name: str | None = None, **fixed_kwargs: Any):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")
        self.fixed_kwargs = fixed_kwargs

    def score(self, prompts, responses, **row):
        out = [float(x) for x in self.fn(list(prompts), list(responses), **row, **self.fixed_kwargs)]
        if len(out) != len(responses):
            raise ValueError(f"reward function {self.name!r} returned {len(out)} scores for {len(responses)} responses")
        return out


def score_with_info(backend: RewardBackend, prompts, responses, *, context: RewardContext | None = None,
                    **row) -> tuple[list[float], list[dict[str, Any]]]:
    """Scores plus per-example details, for any backend (details default to just the score). ``context`` reaches
    backends that declare ``USES_CONTEXT``; the others never see it."""
    extra = {"context": context} if context is not None and uses_context(backend) else {}
    if hasattr(backend, "score_with_info"):
        return backend.score_with_info(prompts, responses, **extra, **row)
    scores = [float(s) for s in backend.score(prompts, responses, **extra, **row)]
    return scores, [{"score": s} for s in scores]


def capabilities_of(reward: Any) -> frozenset[str]:
    """What a backend, a backend class or a registered spec declares in ``capabilities``; a backend that declares
    nothing scores text and nothing more."""
    target = REWARDS.resolve(reward) if isinstance(reward, str) else reward
    return frozenset(getattr(target, "capabilities", None) or {SCORES_TEXT})


REWARDS: Registry[RewardBackend] = Registry(
    "reward backend",
    "alpaca_farm_env.rewards",
    is_instance=lambda x: hasattr(x, "score") and callable(getattr(x, "score")),
    wrap_function=FunctionReward,
)


def register_reward(name: str, factory=None, *, override: bool = False):
    """Register a reward backend class (or scoring function) under ``name``: ``@register_reward("mine")``."""
    return REWARDS.register(name, factory, override=override)


def make_reward(spec: Any, *, context: RewardContext | None = None, **kwargs: Any) -> RewardBackend:
    """Build a backend from a name, ``"module:attr"``, a class, a scoring function, an instance (returned as is) or an
    entry point. ``context`` is passed to the classes that declare ``USES_CONTEXT``, and to no other."""
    target = REWARDS.resolve(spec)
    return REWARDS.make(target, **with_context(target, context, kwargs))


def check_reward(spec: Any, **kwargs: Any) -> None:
    """Fail now on a spec that cannot be built, without building it (a reward model or an annotator loads lazily):
    an unknown name or ``"module:attr"`` raises :class:`~alpaca_farm_env.registry.UnknownSpecError`, and a backend
    class may check its keyword arguments in a ``check_kwargs`` classmethod (e.g. the annotator name)."""
    from ..validation import check_call

    target = REWARDS.resolve(spec)
    if isinstance(target, type):  # the keyword arguments the backend's constructor takes, by name and type
        check_call(target, kwargs, f"reward {spec!r}", prefix="reward_kwargs.", what=f"reward {spec!r}")
    check = getattr(target, "check_kwargs", None) if isinstance(target, type) else None
    if check is not None:
        check(**kwargs)


def list_rewards() -> list[str]:
    """The registered reward names (and those published through entry points)."""
    return REWARDS.names()


def as_trl_reward_func(spec: Any, **kwargs: Any) -> Callable[..., list[float]]:
    """A TRL-style reward function ``f(prompts, completions, **kwargs) -> list[float]`` (GRPO/RLOO trainers).

    Conversational completions (lists of messages) are reduced to the last message's text. Extra dataset columns
    arrive as keyword lists and are passed on as ``row`` (TRL's ``completion_ids`` aside: backends never see token
    ids); ``alpaca_farm_env.envs.as_trl_dataset`` builds them from an env. A backend that judges the instruction
    (``JUDGES_PAIRS``: an annotator) needs an ``instruction`` column: without one it raises ``ValueError`` rather
    than judge the templated prompt.
    """
    backend = make_reward(spec, **kwargs)
    judges_instruction = JUDGES_PAIRS in capabilities_of(backend)

    def _text(x: Any) -> str:
        if isinstance(x, list):  # conversational format: [{"role": ..., "content": ...}, ...]
            return str(x[-1]["content"]) if x else ""
        return str(x)

    def reward_func(prompts, completions, **columns):
        row = {k: v for k, v in columns.items()
               if k != "completion_ids" and isinstance(v, (list, tuple)) and len(v) == len(completions)}
        if judges_instruction and "instruction" not in row:
            raise ValueError(f"reward {getattr(backend, 'name', spec)!r} judges the instruction but the dataset has no "
                             "'instruction' column; build it with alpaca_farm_env.envs.as_trl_dataset(env)")
        return backend.score([_text(p) for p in prompts], [_text(c) for c in completions], **row)

    reward_func.__name__ = f"alpaca_farm_{getattr(backend, 'name', 'reward')}"
    return reward_func
