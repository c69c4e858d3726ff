"""``online_dpo``: online DPO (Guo et al. 2024, arXiv 2402.04792) on TRL's ``OnlineDPOTrainer``
(``trl.experimental.online_dpo``), from the SFT policy on the ``unlabeled`` env's prompts against the env's reward
(the trained reward model by default).

Per step TRL samples two completions for each prompt, scores both through the env
(:class:`~.trl_online.EnvReward`), takes the higher-scored one as chosen (the first on a tie) and the other as
rejected, and minimises DPO's loss on that pair, ``-log sigmoid(beta * (log-ratio of chosen - log-ratio of
rejected))``, each log-ratio being the sequence's log-probability under the policy minus under a frozen copy of the
starting policy (``loss_type="ipo"``: IPO's squared loss instead). The preference is the env's reward, so the pair is
labelled as the paper's pairwise annotators label one, but fresh from the current policy at every step.
Machinery (data, reward, checkpoints, metrics): :mod:`~.trl_online`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import register_agent
from .trl_config import TRLOnlineConfig
from .trl_online import TRLOnlineAgent


@dataclass
class OnlineDPOConfig(TRLOnlineConfig):
    """:class:`~.trl_config.TRLOnlineConfig`'s fields plus online DPO's own; defaults: huggingface/trl
    ``trl/experimental/online_dpo/online_dpo_config.py`` ``OnlineDPOConfig`` (TRL 1.16) where it sets one."""

    per_device_train_batch_size: int = 8
    """Prompts per device per micro-batch, each giving a pair of completions. ``TrainingArguments``: 8."""
    learning_rate: float = 5e-7
    """AdamW learning rate. ``online_dpo_config.py``: 5e-7."""
    temperature: float = 0.9
    """Sampling temperature of the two completions. ``online_dpo_config.py``: 0.9."""
    max_new_tokens: int = 64
    """Most tokens sampled per completion. ``online_dpo_config.py``: 64."""
    max_length: int = 512
    """Most tokens of prompt + completion in the log-probabilities (the prompt's leftmost are cut beyond it).
    ``online_dpo_config.py``: 512."""
    beta: float = 0.1
    """DPO's beta (IPO's tau with ``loss_type="ipo"``). ``online_dpo_config.py``: [0.1], a list with a value per
    epoch; one value here, as the run is counted in steps, not epochs."""
    loss_type: str = "sigmoid"
    """``sigmoid`` (DPO) or ``ipo``. ``online_dpo_config.py``: sigmoid."""
    missing_eos_penalty: float | None = None
    """Subtracted from the reward of a completion that ends without EOS (None: nothing). ``online_dpo_config.py``:
    None."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in ("sigmoid", "ipo"):
            raise ValueError(f"loss_type: {self.loss_type!r} is not one of 'sigmoid', 'ipo'")


@register_agent("online_dpo")
class OnlineDPOAgent(TRLOnlineAgent):
    """Online DPO: ``fit(envs, policy=..., reward=..., output_dir=...)`` on ``envs["unlabeled"]``; ``config``: an
    :class:`OnlineDPOConfig` or a mapping of its fields. See :class:`~.trl_online.TRLOnlineAgent`.

    ``metrics.csv`` columns: ``reward`` (the env's mean reward of the step's completions, TRL's
    ``objective/scores``), then TRL's own names: the chosen-minus-rejected reward (``objective/scores_margin``), the
    sequence KL to the start policy, the implicit rewards' margin and accuracy, the share of completions with EOS."""

    name = "online_dpo"
    CONFIG_CLASS: ClassVar[type] = OnlineDPOConfig
    TRL_MODULE: ClassVar[str] = "trl.experimental.online_dpo"
    TRAINER: ClassVar[str] = "OnlineDPOTrainer"
    TRL_CONFIG: ClassVar[str] = "OnlineDPOConfig"
    CSV_FIELDS: ClassVar[tuple[str, ...]] = ("reward", "objective/scores_margin", "objective/kl",
                                             "objective/entropy", "rewards/margins", "rewards/accuracies",
                                             "val/contain_eos_token", "loss", "grad_norm", "learning_rate")
    LOGGED_AS: ClassVar[dict[str, str]] = {"reward": "objective/scores"}
    REFERENCE_FROM_PATH: ClassVar[bool] = False  # TRL copies the model it is given as the reference
