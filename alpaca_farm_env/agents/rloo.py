"""``rloo``: REINFORCE Leave-One-Out (Ahmadian et al. 2024, arXiv 2402.14740) on TRL's ``RLOOTrainer``, from the SFT
policy on the ``unlabeled`` env's prompts against the env's reward (the trained reward model by default).

Per step TRL samples ``num_generations`` (k) completions for each prompt, scores them through the env
(:class:`~.trl_online.EnvReward`), subtracts ``beta`` x the sequence's KL to the starting policy from each reward
(TRL 1.x puts the KL in the reward, 0.05 by default), and takes as each completion's advantage its reward minus the
mean of the other k - 1 completions of its prompt (the leave-one-out baseline); the loss is the clipped surrogate
(``epsilon``) over the completion tokens. Machinery (data, reward, checkpoints, metrics): :mod:`~.trl_online`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import register_agent
from .trl_online import TRLGroupConfig, TRLOnlineAgent


@dataclass
class RLOOConfig(TRLGroupConfig):
    """:class:`~.trl_online.TRLGroupConfig`'s fields plus RLOO's own; defaults: huggingface/trl
    ``trl/trainer/rloo_config.py`` ``RLOOConfig`` (TRL 1.16), which ``trl/scripts/rloo.py`` runs with."""

    num_generations: int = 2
    """Completions per prompt (k; each one's baseline is the mean of the other k - 1). ``rloo_config.py``: 2."""
    beta: float = 0.05
    """KL coefficient of the penalty in the reward. ``rloo_config.py``: 0.05."""
    normalize_advantages: bool = False
    """Whiten the advantages over the batch. ``rloo_config.py``: False."""


@register_agent("rloo")
class RLOOAgent(TRLOnlineAgent):
    """RLOO: ``fit(envs, policy=..., reward=..., output_dir=...)`` on ``envs["unlabeled"]``; ``config``: an
    :class:`RLOOConfig` or a mapping of its fields. See :class:`~.trl_online.TRLOnlineAgent`."""

    name = "rloo"
    CONFIG_CLASS: ClassVar[type] = RLOOConfig
    TRAINER: ClassVar[str] = "RLOOTrainer"
    TRL_CONFIG: ClassVar[str] = "RLOOConfig"
