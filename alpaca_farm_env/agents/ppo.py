"""``ppo``: PPO against the reward model, faithful to AlpacaFarm (paper Sec. 4 / App. B.1, Table 2's winner).

Reference (tatsu-lab/alpaca_farm): ``examples/scripts/rlhf_ppo.sh`` -> ``examples/rlhf_ppo.py``;
``src/alpaca_farm/rl/ppo_trainer.py`` (``rollout``, ``_shape_reward``, ``_estimate_advantage``, ``compute_loss``,
``record_step_stats``), ``src/alpaca_farm/rl/rl_trainer.py`` (``step``, ``step_with_rollouts``),
``src/alpaca_farm/rl/kl_controller.py``, ``src/alpaca_farm/models/rl_models.py`` (``ActorCritic``, ``Value``).
The loop around the step (optimizer, schedule, checkpoints, logging, Accelerate, evals) is
:class:`~alpaca_farm_env.rl.trainer.RLTrainer`; the tensor maths is :mod:`alpaca_farm_env.rl.losses`.

One PPO step (:meth:`PPOAgent.step`):

1. **rollout** (no grad, dropout off): this process's share of ``rollout_batch_size`` prompts of the ``unlabeled`` env
   (prompts longer than ``query_len`` tokens dropped), sampled at temperature 1.0, top_p 1.0, top_k 0, at most
   ``response_len`` tokens (EOS kept, then pads); the env scores ``prompt + response`` text with the reward (ONE batched
   call per env step) and returns the raw score;
2. log-probs (logits / temperature, 0 at pads), values (read from the hidden state before each response token) and the
   reference policy's log-probs;
3. reward shaping: ``-kl_coef * max(logp - logp_ref, 0)`` per token, the score added at the last response token;
   rewards whitened without shifting the mean; GAE with gamma = lam = 1 over the ``response_len`` window; advantages
   whitened. Whitening statistics are all-reduced over processes (the whole rollout batch, as the paper says; the
   reference whitens per process);
4. ``noptepochs`` epochs over the rollouts in shuffled optimizer steps of ``step_batch_size`` (accumulated over
   micro-batches of ``step_per_device_batch_size``): clipped policy loss (0.2) + ``vf_coef`` (0.1) x clipped value loss
   (0.2), no entropy bonus, means over all positions (pads included, as the reference); grad-norm clip 1.0; AdamW
   (eps 1e-5, weight decay 0); the trainer steps the linear schedule (5 warm-up steps) once per PPO step;
5. the KL controller steps on the mean summed KL (fixed by default; the adaptive one optional).

Models. Policy = a copy of the ``policy`` stage (trained). Reference = a frozen copy (or, in lean mode, the same model
with its LoRA adapter disabled). **Value model**: the reward model's trunk with a zero-initialised scalar head when
the reward backend shares its trunk (capability ``shares_trunk``: a ``reward_model``) and its tokenizer has the
policy's vocabulary (the reference's ``init_value_with_reward``; the pipeline's RM is trained on the SFT trunk, so
this is the default there); otherwise (a synthetic reward, an annotator, a MiniLM reward model with another
tokenizer) the policy's trunk with a zero head, because a value model must read the policy's token ids.
``summary.json`` and ``agent.value_init`` say which one was used.

**Lean mode** (``lean=True``): LoRA on the policy (``lora_r``), the reference = the same model with the adapter disabled
(``with model.disable_adapter():``), and, when the value model comes from the reward model, the value head sits on the
reward model's own trunk, frozen and shared with the reward backend (one trunk, two heads: only the value head and the
LoRA weights train). Four models become one policy plus one reward model. With no shareable RM trunk the value model
is a trained copy of the policy's trunk (then lean saves the reference copy only).

Scale-out: under ``accelerate launch`` (DDP, FSDP, DeepSpeed; configs in ``alpaca_farm_env/configs/accelerate``) each
process rolls out and scores its own shard of the env's prompts (``rows[rank::world]``), gradients are synchronised by
the prepared module, and whitening/statistics are all-reduced. See docs/rl.md.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch

from ..envs.reward_info import reward_capabilities
from ..rl import (
    RLConfig, RLMethod, ValueModel, cat_rollouts, frozen_copy, gae, make_kl_controller, ppo_policy_loss,
    ppo_value_loss, reference_of, response_logits, same_vocab, sequence_inputs, shape_rewards, token_logprobs,
    trunk_of, whiten, with_lora,
)
from .base import register_agent
from .common import reward_of_stage
from .sft import BaseAgent


@dataclass
class PPOConfig(RLConfig):
    """PPO's hyper-parameters: :class:`~alpaca_farm_env.rl.config.RLConfig`'s shared fields (defaults of
    ``examples/scripts/rlhf_ppo.sh``) plus PPO's own, named as in the reference's ``examples/rlhf_ppo.py``
    ``TrainingArguments``."""

    noptepochs: int = 2
    """Epochs over each step's rollouts: 2 x 512 / 256 = 4 optimizer steps per PPO step. ``examples/rlhf_ppo.py``:
    2."""
    adaptive_kl: bool = False
    """Adapt ``kl_coef`` towards ``target_kl`` after each step (``src/alpaca_farm/rl/kl_controller.py``
    ``AdaptiveKLController``); the reference keeps it fixed by default."""
    target_kl: float = 6.0
    """The summed per-sequence KL the adaptive controller aims at. ``kl_controller.py``: 6.0."""
    k_beta: float = 0.1
    """Step size of the adaptive controller (its error is clipped to +-0.2). ``kl_controller.py``: 0.1."""
    cliprange: float = 0.2
    """Clip range of the policy ratio in the surrogate loss, ``clip(r, 1 - c, 1 + c)``. ``examples/rlhf_ppo.py``:
    0.2."""
    cliprange_value: float = 0.2
    """Clip range of the value prediction around the rollout's value, ``clip(V, V_old - c, V_old + c)``.
    ``examples/rlhf_ppo.py``: 0.2."""
    vf_coef: float = 0.1
    """Weight of the value loss in ``policy loss + vf_coef * value loss``. ``examples/rlhf_ppo.py``: 0.1."""
    gamma: float = 1.0
    """Discount factor of GAE over the response tokens. ``examples/rlhf_ppo.py``: 1.0."""
    lam: float = 1.0
    """GAE's lambda (bias-variance trade-off of the advantage). ``examples/rlhf_ppo.py``: 1.0."""
    whiten_rewards: bool = True
    """Whiten the shaped per-token rewards (without shifting their mean) before GAE. ``examples/rlhf_ppo.py``:
    True."""


class ActorCritic(torch.nn.Module):
    """Policy and value model in one module, one optimizer (reference ``rl_models.ActorCritic``)."""

    def __init__(self, policy: Any, value: ValueModel):
        super().__init__()
        self.policy, self.value = policy, value

    def forward(self, queries, query_mask, responses, response_mask, temperature: float = 1.0) -> dict[str, Any]:
        """Returns per response token ``logprobs``, ``entropies`` and ``values`` of ``[queries; responses]``."""
        inputs = sequence_inputs(queries, query_mask, responses, response_mask)
        R = responses.shape[1]
        logits = response_logits(self.policy, inputs, R, temperature)
        logp, ent = token_logprobs(logits, responses, response_mask)
        return {"logprobs": logp, "entropies": ent, "values": self.value(**inputs, response_len=R).float()}


@register_agent("ppo")
class PPOAgent(RLMethod, BaseAgent):
    """PPO. ``fit(envs, policy=..., reward=..., output_dir=...)``; ``respond`` samples from the trained policy at the
    constructor's temperature (0.7 by default, as every method's outputs). ``config``: :class:`PPOConfig` or a mapping;
    ``reward=`` / ``reward_kwargs=`` override the ``reward`` stage; ``evaluate`` (the ``eval_hook``): ``hook(agent) ->
    dict`` called every ``eval_steps`` (e.g. a win-rate on a small eval subset); ``accelerator``: an
    ``accelerate.Accelerator`` (made at fit when not given). See :class:`~alpaca_farm_env.rl.method.RLMethod`."""

    name = "ppo"
    CONFIG_CLASS: ClassVar[type] = PPOConfig
    CSV_FIELDS: ClassVar[tuple[str, ...]] = (
        "reward_mean", "reward_std", "kl", "kl_coef", "entropy", "clipfrac", "approxkl", "policy_loss", "value_loss",
        "value_clipfrac", "response_length", "tokens_per_s", "lr")

    def fit(self, envs: Mapping[str, Any], *, policy: Any = None, reward: Any = None, output_dir: Any = None,
            **_: Any) -> None:
        """Train from the ``policy`` stage against the ``reward`` stage on ``envs["unlabeled"]`` (see
        :meth:`RLMethod.train <alpaca_farm_env.rl.method.RLMethod.train>`); returns None."""
        self.train(envs, policy=policy, reward=None if reward is None else reward_of_stage(reward),
                   output_dir=output_dir)

    # ------------------------------------------------------------------------------------------------ models
    def build(self, policy: Any, reward_backend: Any) -> ActorCritic:
        """Policy (a copy of the stage's), reference, value model; returns them as one :class:`ActorCritic`."""
        cfg, device = self.config, self.accelerator.device
        self.tokenizer = policy.tokenizer
        model = copy.deepcopy(policy.model)  # the stage's policy is shared with other methods
        rm = reward_backend.model if "shares_trunk" in reward_capabilities(reward_backend) else None
        share = rm is not None and same_vocab(policy.tokenizer, reward_backend.tokenizer)
        if cfg.lean:
            model = with_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
            self.ref = None  # the adapter disabled
        else:
            self.ref = frozen_copy(model).to(device)
        if share:
            trunk = trunk_of(rm) if cfg.lean else copy.deepcopy(trunk_of(rm)).to(policy.model.dtype)
            self.value_init = ("reward model trunk, frozen and shared with the reward model, + a zero value head (lean)"
                               if cfg.lean else "copy of the reward model trunk + a zero value head (reference)")
        else:
            trunk = copy.deepcopy(trunk_of(policy.model))
            why = "not a reward model" if rm is None else "a reward model with another tokenizer"
            self.value_init = f"copy of the policy trunk + a zero value head (the reward is {why})"
        value = ValueModel(trunk, trunk.config.hidden_size, trainable_trunk=not (cfg.lean and share))
        ac = ActorCritic(model, value)
        ac.eval()  # dropout off throughout (reference ppo_trainer.rollout: "Give up dropout throughout")
        self.kl_ctl = make_kl_controller(cfg.kl_coef, cfg.adaptive_kl, cfg.target_kl, cfg.k_beta)
        self.start_name = policy.name
        return ac

    def current_policy(self) -> Any:
        from ..models import Policy

        return Policy(self.trainer.unwrapped.policy, self.tokenizer, name=f"{self.start_name}:ppo")

    def final_policy(self) -> Any:
        from ..models import Policy

        model = copy.deepcopy(self.trainer.unwrapped.policy)
        if self.config.lean:
            model = model.merge_and_unload()  # a plain model again: generation and saving as any policy
        return Policy(model.eval(), self.tokenizer, name=f"{self.start_name}:ppo")

    def extra_state(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_ctl.value}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.kl_ctl.value = float(state["kl_coef"])

    def summary_extra(self) -> dict[str, Any]:
        return {"value_init": self.value_init}

    # ------------------------------------------------------------------------------------------------ one step
    def step(self, step: int) -> dict[str, Any]:
        """One PPO step (module docstring, 1-5). Returns the metrics row (``CSV_FIELDS`` but ``lr``)."""
        cfg, tr = self.config, self.trainer
        t0 = time.time()
        ro = self._rollout(step)  # 1-2. rollouts with log-probs, values, reference log-probs (ppo_trainer.rollout)
        mask = ro["response_mask"]
        # 3. shaping, GAE, whitening (ppo_trainer._shape_reward, _estimate_advantage)
        shaped = shape_rewards(ro["logprobs"], ro["ref_logprobs"], ro["scores"], mask, self.kl_ctl.value)
        rewards = shaped["shaped"]
        if cfg.whiten_rewards:
            rewards = whiten(rewards, shift_mean=False, all_reduce=tr.all_reduce)
        advantages, returns = gae(rewards, ro["values"], gamma=cfg.gamma, lam=cfg.lam)
        advantages = whiten(advantages, shift_mean=True, all_reduce=tr.all_reduce)
        ro.update(advantages=advantages, returns=returns)
        n_tokens = tr.all_reduce(mask.sum().float().cpu())
        t_rollout = time.time() - t0
        # 4. optimisation (rl_trainer.step_with_rollouts, ppo_trainer.compute_loss)
        losses = self._optimise(ro, step)
        # 5. statistics (ppo_trainer.record_step_stats), all-reduced means; the KL controller steps on the summed KL
        kl_coef = self.kl_ctl.value
        kl_sum_seq = tr.global_mean(float(shaped["kl"].sum(1).mean()))
        self.kl_ctl.step(kl_sum_seq)
        sc = ro["scores"].cpu()
        reward_mean = tr.global_mean(float(sc.mean()))
        reward_sq = tr.global_mean(float((sc ** 2).mean()))
        ent = float((ro["entropies"] * mask).sum() / mask.sum().clamp_min(1))
        return {
            "reward_mean": reward_mean, "reward_std": max(0.0, reward_sq - reward_mean ** 2) ** 0.5,
            "kl": kl_sum_seq, "kl_coef": kl_coef, "entropy": tr.global_mean(ent), **losses,
            "response_length": tr.global_mean(float(mask.sum(1).float().mean())),
            "tokens_per_s": float(n_tokens) / max(t_rollout, 1e-9),
        }

    def _rollout(self, step: int) -> dict[str, torch.Tensor]:
        """This process's rollouts of ``step`` with, per response token, the policy's log-probs, entropies and values
        and the reference policy's log-probs (no grad). Returns them concatenated (:func:`cat_rollouts`)."""
        cfg, ac, policy = self.config, self.trainer.module, self.trainer.unwrapped.policy
        chunks, _, _ = self.trainer.rollouts(step, policy, self.tokenizer)
        with torch.no_grad():
            for ch in chunks:
                args = (ch["queries"], ch["query_mask"], ch["responses"], ch["response_mask"])
                out = ac(*args, temperature=cfg.temperature)
                # the reference runs at the policy's precision (the prepared module's autocast), so that the KL of
                # an untrained policy is exactly 0
                with reference_of(policy, self.ref) as ref, self.trainer.accelerator.autocast():
                    ref_logits = response_logits(ref, sequence_inputs(*args), cfg.response_len, cfg.temperature)
                ch["ref_logprobs"], _ = token_logprobs(ref_logits, ch["responses"], ch["response_mask"])
                ch.update(logprobs=out["logprobs"], values=out["values"], entropies=out["entropies"])
        return cat_rollouts(chunks, self.tokenizer.pad_token_id)

    def _optimise(self, ro: Mapping[str, torch.Tensor], step: int) -> dict[str, float]:
        """``noptepochs`` epochs of shuffled optimizer steps of ``step_batch_size`` rollouts, each accumulated over
        micro-batches: clipped policy loss + ``vf_coef`` x clipped value loss. Returns the losses' means over the
        micro-batches and processes."""
        cfg, tr, ac = self.config, self.trainer, self.trainer.module
        stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "clipfrac", "approxkl", "vf_clipfrac")}

        def loss_fn(idx):
            b = {k: v[idx] for k, v in ro.items()}
            out = ac(b["queries"], b["query_mask"], b["responses"], b["response_mask"], temperature=cfg.temperature)
            pg, pgs = ppo_policy_loss(out["logprobs"], b["logprobs"], b["advantages"], cfg.cliprange)
            vf, vfs = ppo_value_loss(out["values"], b["values"], b["returns"], cfg.cliprange_value)
            for k, v in (("pg", pg), ("vf", vf), ("clipfrac", pgs["clipfrac"]), ("approxkl", pgs["approxkl"]),
                         ("vf_clipfrac", vfs["clipfrac"])):
                stats[k].append(float(v.detach()))
            return pg + cfg.vf_coef * vf

        n = ro["queries"].shape[0]
        per_step = cfg.step_batch_size // tr.accelerator.num_processes
        micro = max(1, min(cfg.step_per_device_batch_size, per_step))
        for epoch in range(cfg.noptepochs):
            for mb in tr.minibatches(n, min(per_step, n), step, epoch):
                tr.accumulate(ac, [mb[i: i + micro] for i in range(0, len(mb), micro)], loss_fn)
        mean = lambda xs: tr.global_mean(sum(xs) / max(1, len(xs)))  # noqa: E731
        return {"clipfrac": mean(stats["clipfrac"]), "approxkl": mean(stats["approxkl"]),
                "policy_loss": mean(stats["pg"]), "value_loss": mean(stats["vf"]),
                "value_clipfrac": mean(stats["vf_clipfrac"])}
