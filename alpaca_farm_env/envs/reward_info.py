"""What an agent may ask about an env's reward without importing the reward layer.

Agents sit above the envs (``data -> envs -> agents -> benchmark``): they reach rewards only through the env and
the stage products. These functions are that door:

* :func:`reward_capabilities`: what a reward backend (or spec) declares it can do (``"scores_text"``,
  ``"shares_trunk"``: it holds a transformer trunk with the policy's vocabulary that PPO may share as its value
  model, ``"judges_pairs"``: an annotator turned into a reward);
* :func:`reward_judges_like`: whether a reward would judge with the evaluator's judge (the guard of reranking and RL
  methods: optimising against the evaluator overstates the gain), and :func:`learning_reward`, the reward an RL
  method learns from with that guard applied;
* :func:`get_reward_backend`: the process-wide backend of a spec, as the envs build it (pass the env's
  ``env.unwrapped.reward_context`` as ``context`` to get the very backend the env scores with, data dir included;
  or read ``env.unwrapped.reward_backend``);
* :func:`format_prompt`: the AlpacaFarm prompt template the envs' observations carry.
"""
from __future__ import annotations

from typing import Any

from ..data import format_prompt
from .source import get_reward_backend


def reward_capabilities(reward: Any) -> frozenset[str]:
    """The capabilities a reward backend, backend class or registered spec declares (its ``capabilities``)."""
    from ..rewards import capabilities_of

    return capabilities_of(reward)


def reward_judges_like(reward: Any, reward_kwargs: dict[str, Any] | None, evaluator: Any,
                       evaluator_kwargs: dict[str, Any] | None = None, data_dir: Any = None) -> bool:
    """True when ``reward`` would judge with ``evaluator``'s judge (label noise aside); see
    :func:`~alpaca_farm_env.rewards.annotator_reward.reward_is_evaluator`."""
    from ..rewards.annotator_reward import reward_is_evaluator

    return reward_is_evaluator(reward, reward_kwargs, evaluator, evaluator_kwargs, data_dir=data_dir)


def learning_reward(env: Any, override: tuple[Any, dict[str, Any]] | None,
                    stage: tuple[Any, dict[str, Any]] | None, evaluator: Any, method: str) -> tuple[Any, dict[str, Any]]:
    """Returns ``(spec, kwargs)`` of the reward a method learns from on ``env``: ``override`` (the method's own
    ``reward=``), else the reward ``stage``'s, else the env's own. Raises ``ValueError`` when it would judge with the
    ``evaluator``'s judge (optimising against it would overstate the gain); the env's data dir keys that check."""
    base = getattr(env, "unwrapped", env)
    if override is not None:
        spec, kwargs = override
    elif stage is not None:
        spec, kwargs = stage[0], dict(stage[1] or {})
    else:
        spec, kwargs = base.reward_spec, dict(base.reward_kwargs or {})
    if reward_judges_like(spec, kwargs, evaluator, data_dir=getattr(base, "data_dir", None)):
        raise ValueError(f"{method} would learn from the evaluator's judge; that overstates the gain. Use the "
                         "trained reward model (the reward stage) or another reward backend")
    return spec, kwargs


__all__ = ["format_prompt", "get_reward_backend", "learning_reward", "reward_capabilities", "reward_judges_like"]
