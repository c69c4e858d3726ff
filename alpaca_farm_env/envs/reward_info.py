"""What an agent may ask about an env's reward without importing the reward layer.

Agents sit above the envs (``data -> envs -> agents -> benchmark``): they reach rewards only through the env and
the stage products. These functions are that door:

* :func:`reward_capabilities`: what a reward backend (or spec) declares it can do (``"scores_text"``,
  ``"shares_trunk"``: it holds a transformer trunk with the policy's vocabulary that PPO may share as its value
  model, ``"judges_pairs"``: an annotator turned into a reward);
* :func:`reward_judges_like`: whether a reward would judge with the evaluator's judge (the guard of reranking and RL
  methods: optimising against the evaluator overstates the gain);
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


__all__ = ["format_prompt", "get_reward_backend", "reward_capabilities", "reward_judges_like"]
