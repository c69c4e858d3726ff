"""``RLConfig``: the hyper-parameters every RL method here shares (batching, optimizer, KL anchor, sampling, lengths,
schedule of checkpoints and evals, LoRA), named as in the reference and documented field by field (TRL style).

``PPOConfig`` (``agents/ppo.py``) and ``QuarkConfig`` (``agents/quark.py``) extend it with their own fields; a new
method's config does the same. Defaults are those of tatsu-lab/alpaca_farm ``examples/scripts/rlhf_ppo.sh`` (which
``examples/scripts/rlhf_quark.sh`` shares, learning rate and KL coefficient aside), else the reference's
``TrainingArguments`` in ``examples/rlhf_ppo.py`` / ``examples/rlhf_quark.py``, else Hugging Face
``transformers.TrainingArguments``. Fields marked *ours* have no counterpart in the reference.

Batch sizes count sequences (prompt + response) over all processes unless their name says ``per_device``.
``validation.check_fields`` checks a mapping of these fields before training: types from the annotations, ranges from
``RANGES`` or ``validation.default_range``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..tracking import check_report_to

__all__ = ["RLConfig"]


@dataclass
class RLConfig:
    """The fields PPO and Quark share; see the module docstring for where the defaults come from."""

    RANGES: ClassVar[dict[str, tuple[float | None, float | None]]] = {"eval_steps": (0, None),
                                                                       "n_eval_prompts": (0, None)}
    """``eval_steps`` 0 and ``n_eval_prompts`` 0 are allowed (no periodic eval); every other field follows
    ``validation.default_range``."""

    # ------------------------------------------------------------------------------------------------ batching
    rollout_batch_size: int = 512
    """Prompts rolled out (sampled and scored) per RL step, over all processes. ``rlhf_ppo.sh``: 512 (32 per device x
    2 accumulation x 8 GPUs)."""
    step_batch_size: int = 256
    """Sequences per optimizer step, over all processes (accumulated over micro-batches). ``rlhf_ppo.sh``: 256 (2 per
    device x 16 accumulation x 8 GPUs)."""
    rollout_per_device_batch_size: int = 32
    """Prompts per ``generate`` call and per env episode (the vector env's ``num_envs``) on each process.
    ``rlhf_ppo.sh``: 32."""
    step_per_device_batch_size: int = 2
    """Sequences per forward/backward micro-batch on each process. ``rlhf_ppo.sh``: 2."""

    # ------------------------------------------------------------------------------------------------ optimizer
    learning_rate: float = 1e-5
    """AdamW learning rate, the peak of the linear schedule. ``rlhf_ppo.sh``: 1e-5 (``rlhf_quark.sh``: 3e-6)."""
    warmup_steps: int = 5
    """RL steps of linear warm-up; the rate then decays linearly to 0 at ``total_steps`` (the HF ``linear`` schedule,
    stepped once per RL step as in ``src/alpaca_farm/rl/rl_trainer.py`` ``step``). ``rlhf_ppo.sh``: 5."""
    adam_epsilon: float = 1e-5
    """AdamW epsilon. ``examples/rlhf_ppo.py`` ``TrainingArguments``: 1e-5 (the OpenAI PPO and UW Quark value, not
    the Hugging Face default)."""
    weight_decay: float = 0.0
    """AdamW weight decay. ``transformers.TrainingArguments`` default: 0."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip before each optimizer step. ``transformers.TrainingArguments`` default: 1.0."""

    # ------------------------------------------------------------------------------------------------ objective
    kl_coef: float = 0.0067
    """Weight of the KL penalty towards the reference (the starting) policy. ``rlhf_ppo.sh`` and the README
    (simulated preferences): 0.0067 (paper v1: 0.002 simulated, 0.02 human); ``rlhf_quark.sh``: 0.05."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts; the log-probs of training divide the logits by it too
    (``src/alpaca_farm/models/rl_models.py``). ``rlhf_ppo.sh``: 1.0, with top_p 1.0 and top_k 0."""

    # ------------------------------------------------------------------------------------------------ lengths
    query_len: int = 192
    """Longest prompt, in tokens; longer prompts are dropped from RL training (``src/alpaca_farm/
    data_preprocessor.py`` ``QueryDataset``). ``examples/rlhf_ppo.py``: 192."""
    response_len: int = 300
    """Most tokens sampled per response (EOS kept, then pads). ``examples/rlhf_ppo.py``: 300."""

    # ------------------------------------------------------------------------------------------------ schedule
    total_steps: int = 390
    """RL steps of the run: 10 epochs over the 20k unlabeled prompts at 512 a step (``rlhf_ppo.sh``
    ``--total_epochs 10``; the paper's best checkpoints come at 20-80 steps)."""
    save_steps: int = 20
    """A checkpoint every this many steps (and at the end); a rerun resumes from it. ``rlhf_ppo.sh``: 20."""
    keep_checkpoints: bool = False
    """Also keep the policy of each save in ``output_dir/checkpoints/step_<k>`` (the LoRA adapter only in lean mode),
    after training too, for choosing the best step afterwards (the benchmark's ``select``). The reference keeps
    every ``save_steps`` policy too, in ``<output_dir>_ckpt_<k>`` (``src/alpaca_farm/rl/rl_trainer.py`` ``train``,
    saved before step k runs, i.e. after k - 1 updates; ``step_<k>`` here is after k). *Ours* as a switch: off,
    only the resume state is written."""
    eval_steps: int = 20
    """A periodic eval every this many steps: the mean reward on the held-out prompts and the agent's ``eval_hook``
    (0: none). The reference evaluates every ``eval_steps`` too."""
    n_eval_prompts: int = 8
    """Prompts of the env held out from training for the periodic eval (the last ones). *Ours*."""
    seed: int = 42
    """Seed of the models' initialisation, of the prompt order, of sampling and of the minibatch order. *Ours*."""
    report_to: str = "none"
    """Where the rows of ``metrics.csv`` and ``eval.csv`` are also logged, through Accelerate's trackers: ``"none"``
    (the CSV files only), ``"tensorboard"`` (``output_dir/runs/<method>``) or ``"wandb"``
    (:mod:`~alpaca_farm_env.tracking`). ``TrainingArguments``' name; not part of the run key. *Ours*."""

    # ------------------------------------------------------------------------------------------------ lean mode
    lean: bool = False
    """LoRA on the policy; the reference policy is the same model with the adapter disabled (PPO: the value head on
    the reward model's frozen trunk when it can be shared). *Ours*: one policy in memory instead of two."""
    lora_r: int = 8
    """LoRA rank in lean mode. *Ours*."""
    lora_alpha: int = 16
    """LoRA alpha in lean mode. *Ours*."""
    lora_dropout: float = 0.0
    """LoRA dropout in lean mode; 0 because the reference turns dropout off throughout RL
    (``src/alpaca_farm/rl/ppo_trainer.py`` ``rollout``)."""
    stop_after: int | None = None
    """Stop after this many steps, checkpointed and unfinished (``None``: run to ``total_steps``). For tests of
    resume; not part of the run key. *Ours*."""

    def __post_init__(self) -> None:
        check_report_to(self.report_to)
