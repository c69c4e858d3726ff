"""The configs of the TRL online methods: :class:`TRLOnlineConfig`, the fields they all share (named as TRL names them),
and :class:`TRLGroupConfig`, what GRPO and RLOO add; :func:`kept_steps_of` gives the steps a run of a config saves at."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..tracking import check_report_to

__all__ = ["NOT_TRL", "TRLGroupConfig", "TRLOnlineConfig", "kept_steps_of"]

NOT_TRL = frozenset({"bf16", "gradient_checkpointing", "eval_steps", "keep_checkpoints", "max_prompt_length",
                     "stop_after", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "report_to"})
"""Config fields that are not passed to the TRL config as they are (resolved, renamed, or ours)."""


@dataclass
class TRLOnlineConfig:
    """The fields the TRL online methods share, named as TRL names them. Defaults: huggingface/trl ``trl/trainer/
    grpo_config.py`` / ``rloo_config.py`` (TRL 1.16; the configs ``trl/scripts/grpo.py`` and ``trl/scripts/rloo.py``
    run with), else their base ``transformers.TrainingArguments``; fields marked *ours* have no TRL counterpart, and
    the few defaults that differ say why. Online DPO overrides the defaults its TRL config changes."""

    RANGES: ClassVar[dict[str, tuple[float | None, float | None]]] = {"eval_steps": (0, None), "top_k": (0, None)}
    """``eval_steps`` 0: no periodic eval; ``top_k`` 0: no top-k filter."""

    learning_rate: float = 1e-6
    """AdamW learning rate, the peak of the schedule. TRL: 1e-6."""
    lr_scheduler_type: str = "linear"
    """Learning-rate schedule. ``TrainingArguments``: linear."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up. ``TrainingArguments``: 0."""
    weight_decay: float = 0.0
    """AdamW weight decay. ``TrainingArguments``: 0."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon. ``TrainingArguments``: 1e-8."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip. ``TrainingArguments``: 1.0."""
    per_device_train_batch_size: int = 8
    """Completions per device per micro-batch (``num_generations`` of them share a prompt). ``TrainingArguments``:
    8."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step (and per generation batch). ``TrainingArguments``: 1."""
    max_steps: int = 390
    """Optimizer steps of the run. TRL runs ``num_train_epochs`` (3) over the dataset instead; a fixed count lets the
    steps a run keeps be known before it starts (the benchmark checks ``select: step:<k>`` first). 390: PPO's
    ``total_steps`` (tatsu-lab/alpaca_farm ``examples/scripts/rlhf_ppo.sh``), so the RL methods share a step axis."""
    temperature: float = 1.0
    """Sampling temperature of the completions. TRL: 1.0."""
    top_p: float = 1.0
    """Nucleus sampling of the completions. TRL: 1.0."""
    top_k: int = 0
    """Top-k sampling of the completions (0: off). TRL: 0."""
    seed: int = 42
    """Seed of initialisation, prompt order and sampling. ``TrainingArguments``: 42."""
    max_prompt_length: int | None = 192
    """*Ours*: prompts longer than this many tokens are dropped (None: none), as PPO's ``query_len`` drops them
    (tatsu-lab/alpaca_farm ``examples/rlhf_ppo.py``: 192), so the RL methods train on the same prompts; TRL 1.x
    truncates no prompt."""
    bf16: bool | None = None
    """bf16 mixed precision; None: on a GPU that supports it, never on CPU. TRL: True unless fp16 (slow on CPU)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass. TRL: True; off here, as for DPO: it only trades speed for
    memory."""
    use_peft: bool = False
    """Train a LoRA adapter instead of the full model (``trl/trainer/model_config.py`` ``ModelConfig``: False)."""
    lora_r: int = 16
    """LoRA rank with ``use_peft``. ``ModelConfig``: 16."""
    lora_alpha: int = 32
    """LoRA alpha with ``use_peft``. ``ModelConfig``: 32."""
    lora_dropout: float = 0.05
    """LoRA dropout with ``use_peft``. ``ModelConfig``: 0.05."""
    save_steps: int = 20
    """A resume checkpoint (and, with ``keep_checkpoints``, a kept policy) every this many steps and at the end.
    ``TrainingArguments``: 500; 20 as PPO (``rlhf_ppo.sh``), so the kept steps are PPO's."""
    eval_steps: int = 20
    """*Ours*: the agent's ``eval_hook`` every this many steps, logged to ``eval.csv`` (0: none), as PPO."""
    keep_checkpoints: bool = False
    """*Ours*: keep the policy of each save in ``output_dir/checkpoints/step_<k>`` (the benchmark's ``select``)."""
    report_to: str = "none"
    """Where TRL also logs (``none``, ``tensorboard``, ``wandb``; ``alpaca_farm_env.tracking``: TensorBoard in
    ``<output_dir>/runs/<method>``); not part of the run key. TRL: none."""
    stop_after: int | None = None
    """*Ours*: stop after this many steps without saving there (tests of resume); not part of the run key."""

    def __post_init__(self) -> None:
        check_report_to(self.report_to)

    @property
    def total_steps(self) -> int:
        """The run's optimizer steps (``max_steps``), under the name the benchmark's messages use."""
        return self.max_steps


@dataclass
class TRLGroupConfig(TRLOnlineConfig):
    """The fields GRPO and RLOO add: a group of completions per prompt and a clipped surrogate loss. Defaults:
    ``grpo_config.py`` / ``rloo_config.py`` (TRL 1.16)."""

    RANGES: ClassVar[dict[str, tuple[float | None, float | None]]] = {**TRLOnlineConfig.RANGES,
                                                                       "num_generations": (2, None)}
    """A group needs at least 2 completions."""

    num_generations: int = 8
    """Completions sampled per prompt (the group). GRPO: 8 (RLOO: 2)."""
    max_completion_length: int = 512
    """Most tokens sampled per completion. TRL: 512."""
    beta: float = 0.0
    """KL coefficient towards the starting policy (0: no reference model). GRPO: 0.0 (RLOO: 0.05)."""
    num_iterations: int = 1
    """Optimisation passes over each generation batch (mu). TRL: 1."""
    epsilon: float = 0.2
    """Clip range of the importance ratio. TRL: 0.2."""
    epsilon_high: float | None = None
    """Upper clip bound (None: ``epsilon``). TRL: None."""
    mask_truncated_completions: bool = False
    """Leave completions cut at ``max_completion_length`` out of the loss. TRL: False."""


def kept_steps_of(config: TRLOnlineConfig) -> list[int]:
    """Returns the steps at which a run of ``config`` saves (every ``save_steps``-th and the last, ``max_steps``)."""
    total, every = int(config.max_steps), max(1, int(config.save_steps))
    return sorted(set(range(every, total + 1, every)) | ({total} if total > 0 else set()))
