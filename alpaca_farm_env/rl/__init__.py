"""The RL toolkit PPO and Quark are written with, and a new RL method can be.

* :mod:`.losses`: pure tensor maths (whitening, reward shaping, GAE, the PPO and Quark losses, KL controllers);
* :mod:`.rollout`: sampling through the env, tokenisation, per-token log-probs, which prompts a step rolls out;
* :mod:`.models`: the value model, trunks, the reference policy, LoRA;
* :mod:`.config`: :class:`RLConfig`, the fields every RL method shares (each documented with its source);
* :mod:`.trainer`: :class:`RLTrainer`, the loop (optimizer and schedule, accumulation, checkpoints, CSV logging,
  Accelerate, periodic eval, final save) and the policies kept at each save (``keep_checkpoints``);
* :mod:`.method`: :class:`RLMethod`, the hooks an RL agent implements for the trainer (``build``, ``step``,
  ``current_policy``, ``final_policy``) and the agent-protocol plumbing they share.

Layering: ``rl`` sits beside the agents and below them; it reaches rewards only through
:mod:`alpaca_farm_env.envs.reward_info` and env attributes. See docs/rl.md and docs/extending.md.
"""
from .config import RLConfig
from .losses import (
    AdaptiveKLController, FixedKLController, gae, make_kl_controller, ppo_policy_loss, ppo_value_loss, quark_loss,
    shape_rewards, whiten,
)
from .method import RLMethod
from .models import ValueModel, frozen_copy, reference_of, same_vocab, trunk_of, with_lora
from .rollout import (
    cat_rollouts, collect_rollouts, encode_queries, env_episode, env_rows, eos_ids, epoch_order, is_alpaca_farm_env,
    pad_responses, position_ids, positions_for_step, query_fits, response_logits, sample_responses, seeded,
    sequence_inputs, token_logprobs,
)
from .trainer import KEPT_DIR, RLTrainer, make_optimizer, run_key, saved_steps

__all__ = [
    "AdaptiveKLController", "FixedKLController", "KEPT_DIR", "RLConfig", "RLMethod", "RLTrainer", "ValueModel",
    "cat_rollouts", "collect_rollouts", "encode_queries", "env_episode", "env_rows", "eos_ids", "epoch_order",
    "frozen_copy", "gae", "is_alpaca_farm_env", "make_kl_controller", "make_optimizer", "pad_responses", "position_ids",
    "positions_for_step", "ppo_policy_loss", "ppo_value_loss", "quark_loss", "query_fits", "reference_of",
    "response_logits", "run_key", "same_vocab", "sample_responses", "saved_steps", "seeded", "sequence_inputs",
    "shape_rewards", "token_logprobs", "trunk_of", "whiten", "with_lora",
]
