"""``ppo``: PPO against the reward model, faithful to AlpacaFarm (paper Sec. 4 / App. B.1, Table 2's winner).

Reference: tatsu-lab/alpaca_farm ``examples/scripts/rlhf_ppo.sh`` -> ``examples/rlhf_ppo.py``, ``src/alpaca_farm/rl/
ppo_trainer.py``, ``rl/rl_trainer.py``, ``rl/kl_controller.py``, ``models/rl_models.py``; reference notes Sec. 5.4 / 8.7.
The shared pieces (rollout, shaping, GAE, losses, whitening, logging, checkpoints) are in :mod:`.rl_core`.

One PPO step (``_train_step``):

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
   (eps 1e-5, weight decay 0); the linear schedule with 5 warm-up steps advances once per PPO step;
5. the KL controller steps on the mean summed KL (fixed by default; the adaptive one optional).

Models. Policy = a copy of the ``policy`` stage (trained). Reference = a frozen copy (or, in lean mode, the same model
with its LoRA adapter disabled). **Value model**: the reward model's trunk with a zero-initialised scalar head when
the reward is a ``reward_model`` whose tokenizer has the policy's vocabulary (the reference's ``init_value_with_reward``;
the pipeline's RM is trained on the SFT trunk, so this is the default there); otherwise (a synthetic reward, an
annotator, a MiniLM reward model with another tokenizer) the policy's trunk with a zero head, because a value model
must read the policy's token ids. ``summary.json`` and ``agent.value_init`` say which one was used.

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
from typing import Any, ClassVar

import torch

from .base import register_agent
from .rl_core import (
    RLAgentBase, ValueModel, cat_rollouts, frozen_copy, gae, make_kl_controller, make_optimizer, ppo_policy_loss,
    ppo_value_loss, reference_of, response_logits, same_vocab, sequence_inputs, shape_rewards, token_logprobs,
    trunk_of, whiten, with_lora,
)


@dataclass
class PPOConfig:
    """PPO hyper-parameters, named as in the reference (TRL style); defaults are ``examples/scripts/rlhf_ppo.sh``'s
    values, else the reference's ``TrainingArguments`` defaults (reference notes Sec. 5.4)."""

    # eval_steps 0 / n_eval_prompts 0: no periodic eval (validation.default_range covers the rest)
    RANGES: ClassVar[dict[str, tuple[float | None, float | None]]] = {"eval_steps": (0, None), "n_eval_prompts": (0, None)}


    rollout_batch_size: int = 512  # rlhf_ppo.sh: 32 per device x 2 accumulation x 8 GPUs
    step_batch_size: int = 256  # rlhf_ppo.sh: 2 per device x 16 accumulation x 8 GPUs
    rollout_per_device_batch_size: int = 32  # prompts per generate call / env step (rlhf_ppo.sh)
    step_per_device_batch_size: int = 2  # micro-batch of the optimisation (rlhf_ppo.sh)
    noptepochs: int = 2  # rlhf_ppo.sh -> 2 x 512/256 = 4 optimizer steps per PPO step
    learning_rate: float = 1e-5  # rlhf_ppo.sh
    warmup_steps: int = 5  # rlhf_ppo.sh; linear decay to 0 (HF default scheduler), stepped once per PPO step
    adam_epsilon: float = 1e-5  # rlhf_ppo.sh (--adam_epsilon 1e-5)
    weight_decay: float = 0.0  # TrainingArguments default
    max_grad_norm: float = 1.0  # TrainingArguments default
    kl_coef: float = 0.0067  # rlhf_ppo.sh / README (simulated preferences); paper v1: 0.002 sim, 0.02 human
    adaptive_kl: bool = False  # rl_trainer / kl_controller: fixed by default
    target_kl: float = 6.0  # kl_controller.AdaptiveKLController
    k_beta: float = 0.1  # kl_controller.AdaptiveKLController
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 1.0
    whiten_rewards: bool = True
    temperature: float = 1.0  # rollouts and log-probs
    query_len: int = 192  # longer prompts are dropped
    response_len: int = 300
    total_steps: int = 390  # 10 epochs over the 20k unlabeled prompts / 512 (the paper peaks at 20-80 steps)
    save_steps: int = 20  # rlhf_ppo.sh
    eval_steps: int = 20  # an eval every 20 steps (the reference evaluates at eval_steps too)
    n_eval_prompts: int = 8  # held-out prompts of the env for the periodic eval (excluded from training)
    seed: int = 42
    lean: bool = False  # LoRA policy, reference = adapter disabled, value head on the frozen shared RM trunk
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0  # the reference gives up dropout in RL
    stop_after: int | None = None  # stop (checkpointed, unfinished) after this many steps: tests of resume


class ActorCritic(torch.nn.Module):
    """Policy and value model in one module, one optimizer (reference ``rl_models.ActorCritic``)."""

    def __init__(self, policy: Any, value: ValueModel):
        super().__init__()
        self.policy, self.value = policy, value

    def forward(self, queries, query_mask, responses, response_mask, temperature: float = 1.0):
        inputs = sequence_inputs(queries, query_mask, responses, response_mask)
        R = responses.shape[1]
        logits = response_logits(self.policy, inputs, R, temperature)
        logp, ent = token_logprobs(logits, responses, response_mask)
        return {"logprobs": logp, "entropies": ent, "values": self.value(**inputs, response_len=R).float()}


@register_agent("ppo")
class PPOAgent(RLAgentBase):
    """PPO. ``fit(envs, policy=..., reward=..., output_dir=...)``; ``respond`` samples from the trained policy at the
    constructor's temperature (0.7 by default, as every method's outputs). ``config``: :class:`PPOConfig` or a mapping;
    ``reward=`` / ``reward_kwargs=`` override the ``reward`` stage; ``evaluate``: ``evaluate(agent) -> dict`` called
    every ``eval_steps`` (e.g. a win-rate on a small eval subset); ``accelerator``: an ``accelerate.Accelerator``
    (made here when not given)."""

    name = "ppo"
    CONFIG_CLASS: ClassVar[type] = PPOConfig
    CSV_FIELDS: ClassVar[tuple[str, ...]] = (
        "reward_mean", "reward_std", "kl", "kl_coef", "entropy", "clipfrac", "approxkl", "policy_loss", "value_loss",
        "value_clipfrac", "response_length", "tokens_per_s", "lr")

    def _build(self, start: Any, backend: Any) -> None:
        cfg, acc = self.config, self.accelerator
        model = copy.deepcopy(start.model)  # the stage's policy is shared with other methods
        from ..rewards.reward_model import RewardModelReward

        rm = backend.model if isinstance(backend, RewardModelReward) else None
        share = rm is not None and same_vocab(start.tokenizer, backend.tokenizer)
        if cfg.lean:
            model = with_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
            self.ref = None  # the adapter disabled
        else:
            self.ref = frozen_copy(model).to(acc.device)
        if share:
            trunk = trunk_of(rm) if cfg.lean else copy.deepcopy(trunk_of(rm)).to(start.model.dtype)
            self.value_init = ("reward model trunk, frozen and shared with the reward model, + a zero value head (lean)"
                               if cfg.lean else "copy of the reward model trunk + a zero value head (reference)")
        else:
            trunk = copy.deepcopy(trunk_of(start.model))
            why = "not a reward model" if rm is None else "a reward model with another tokenizer"
            self.value_init = f"copy of the policy trunk + a zero value head (the reward is {why})"
        value = ValueModel(trunk, trunk.config.hidden_size, trainable_trunk=not (cfg.lean and share))
        ac = ActorCritic(model, value)
        ac.eval()  # dropout off throughout (reference ppo_trainer.rollout: "Give up dropout throughout")
        opt, self.scheduler = make_optimizer([p for p in ac.parameters() if p.requires_grad], cfg)
        self.trained_module, self.optimizer = acc.prepare(ac, opt)
        acc.register_for_checkpointing(self.scheduler)
        self.kl_ctl = make_kl_controller(cfg.kl_coef, cfg.adaptive_kl, cfg.target_kl, cfg.k_beta)

    def _extra_state(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_ctl.value}

    def _load_extra_state(self, state) -> None:
        self.kl_ctl.value = float(state["kl_coef"])

    @property
    def _unwrapped(self) -> ActorCritic:
        return self.accelerator.unwrap_model(self.trained_module)

    def _current_policy(self) -> Any:
        from ..models import Policy

        return Policy(self._unwrapped.policy, self.tokenizer, name=f"{self.policy.name}:ppo")

    def _final_policy(self) -> Any:
        from ..models import Policy

        model = copy.deepcopy(self._unwrapped.policy)
        if self.config.lean:
            model = model.merge_and_unload()  # a plain model again: generation and saving as any policy
        return Policy(model.eval(), self.tokenizer, name=f"{self.policy.name}:ppo")

    # ------------------------------------------------------------------------------------------------ one step
    def _train_step(self, step: int) -> dict[str, Any]:
        cfg, acc, ac = self.config, self.accelerator, self.trained_module
        t0 = time.time()
        # 1. rollout through the env (ppo_trainer.rollout)
        chunks, scores, _ = self.collect(step, self._unwrapped.policy)
        with torch.no_grad():
            for ch in chunks:
                args = (ch["queries"], ch["query_mask"], ch["responses"], ch["response_mask"])
                out = ac(*args, temperature=cfg.temperature)
                with reference_of(self._unwrapped.policy, self.ref) as ref:
                    inputs = sequence_inputs(*args)
                    ref_logits = response_logits(ref, inputs, cfg.response_len, cfg.temperature)
                ch["ref_logprobs"], _ = token_logprobs(ref_logits, ch["responses"], ch["response_mask"])
                ch.update(logprobs=out["logprobs"], values=out["values"], entropies=out["entropies"])
        ro = cat_rollouts(chunks, self.tokenizer.pad_token_id)
        mask = ro["response_mask"]
        # 2. shaping, GAE, whitening (ppo_trainer._shape_reward, _estimate_advantage)
        shaped = shape_rewards(ro["logprobs"], ro["ref_logprobs"], ro["scores"], mask, self.kl_ctl.value)
        rewards = shaped["shaped"]
        if cfg.whiten_rewards:
            rewards = whiten(rewards, shift_mean=False, all_reduce=self.all_reduce)
        advantages, returns = gae(rewards, ro["values"], gamma=cfg.gamma, lam=cfg.lam)
        advantages = whiten(advantages, shift_mean=True, all_reduce=self.all_reduce)
        ro.update(advantages=advantages, returns=returns)
        n_tokens = self.all_reduce(mask.sum().float().cpu())
        t_rollout = time.time() - t0

        # 3. optimisation (rl_trainer.step_with_rollouts, ppo_trainer.compute_loss)
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
        per_step = cfg.step_batch_size // acc.num_processes
        micro = max(1, min(cfg.step_per_device_batch_size, per_step))
        for epoch in range(cfg.noptepochs):
            for mb in self.minibatches(n, min(per_step, n), step, epoch):
                self.accumulate(ac, [mb[i: i + micro] for i in range(0, len(mb), micro)], loss_fn)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()  # once per PPO step (rl_trainer.step)

        # 4. statistics (ppo_trainer.record_step_stats), all-reduced means; the KL controller steps on the summed KL
        kl_coef = self.kl_ctl.value
        kl_sum_seq = self.global_mean(float(shaped["kl"].sum(1).mean()))
        self.kl_ctl.step(kl_sum_seq)
        sc = torch.tensor(scores)
        reward_mean = self.global_mean(float(sc.mean()))
        reward_sq = self.global_mean(float((sc ** 2).mean()))
        ent = float((ro["entropies"] * mask).sum() / mask.sum().clamp_min(1))
        mean = lambda xs: self.global_mean(sum(xs) / max(1, len(xs)))  # noqa: E731
        return {
            "reward_mean": reward_mean, "reward_std": max(0.0, reward_sq - reward_mean ** 2) ** 0.5,
            "kl": kl_sum_seq, "kl_coef": kl_coef, "entropy": self.global_mean(ent),
            "clipfrac": mean(stats["clipfrac"]), "approxkl": mean(stats["approxkl"]), "policy_loss": mean(stats["pg"]),
            "value_loss": mean(stats["vf"]), "value_clipfrac": mean(stats["vf_clipfrac"]),
            "response_length": self.global_mean(float(mask.sum(1).float().mean())),
            "tokens_per_s": float(n_tokens) / max(t_rollout, 1e-9), "lr": lr,
        }
