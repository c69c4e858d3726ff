"""``grpo``: Group Relative Policy Optimization (Shao et al. 2024, arXiv 2402.03300) on TRL's ``GRPOTrainer``, from the
SFT policy on the ``unlabeled`` env's prompts against the env's reward (the trained reward model by default).

Per step TRL samples ``num_generations`` completions for each prompt of the generation batch, scores them through the
env (:class:`~.trl_online.EnvReward`), and takes as each completion's advantage its reward minus its group's mean,
divided by the group's standard deviation (``scale_rewards="group"``); the loss is the clipped surrogate
(``epsilon``) over the completion tokens, normalised by the active tokens of the accumulated batch (``loss_type=
"dapo"``, TRL's default), plus ``beta`` x the k3 KL estimate to the starting policy (0 by default: no reference
model, TRL's default). Machinery (data, reward, checkpoints, metrics): :mod:`~.trl_online`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import register_agent
from .trl_online import TRLGroupConfig, TRLOnlineAgent


@dataclass
class GRPOConfig(TRLGroupConfig):
    """:class:`~.trl_online.TRLGroupConfig`'s fields plus GRPO's own; defaults: huggingface/trl
    ``trl/trainer/grpo_config.py`` ``GRPOConfig`` (TRL 1.16), which ``trl/scripts/grpo.py`` runs with."""

    num_generations: int = 8
    """Completions per prompt (the group the advantage is relative to). ``grpo_config.py``: 8."""
    beta: float = 0.0
    """KL coefficient (0: no reference model is loaded). ``grpo_config.py``: 0.0."""
    loss_type: str = "dapo"
    """How token losses are aggregated: ``grpo`` (per sequence), ``dr_grpo``, ``dapo`` (over the active tokens of the
    accumulated batch), ``bnpo``, ... ``grpo_config.py``: dapo."""
    scale_rewards: str = "group"
    """Advantage scaling: ``group`` (by the group's std), ``batch``, ``none``. ``grpo_config.py``: group."""


@register_agent("grpo")
class GRPOAgent(TRLOnlineAgent):
    """GRPO: ``fit(envs, policy=..., reward=..., output_dir=...)`` on ``envs["unlabeled"]``; ``config``: a
    :class:`GRPOConfig` or a mapping of its fields. See :class:`~.trl_online.TRLOnlineAgent`."""

    name = "grpo"
    CONFIG_CLASS: ClassVar[type] = GRPOConfig
    TRAINER: ClassVar[str] = "GRPOTrainer"
    TRL_CONFIG: ClassVar[str] = "GRPOConfig"
