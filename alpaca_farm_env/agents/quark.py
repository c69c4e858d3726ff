"""``quark``: AlpacaFarm's Quark variant (paper Sec. 4 / App. B.2): reward-quantile filtering plus a KL anchor.

Reference (tatsu-lab/alpaca_farm): ``examples/scripts/rlhf_quark.sh`` -> ``examples/rlhf_quark.py``;
``src/alpaca_farm/rl/quark_trainer.py`` (``rollout``, ``compute_loss``, ``step``), ``src/alpaca_farm/rl/
quark_utils.py``. The loop around the step (optimizer, schedule, checkpoints, logging, Accelerate, evals) is
:class:`~alpaca_farm_env.rl.trainer.RLTrainer`; the loss is :func:`alpaca_farm_env.rl.losses.quark_loss`.

One Quark step (:meth:`QuarkAgent.step`):

1. the data pool is cleared (``clear_data_pool_on_each_rollout``: the paper's change to Quark, whose original pool
   grows);
2. this process's share of ``rollout_batch_size`` prompts is sampled at temperature 1.0 (top_p 1, top_k 0) and scored
   through the env (the raw reward);
3. the rollouts are sorted by reward (descending) and cut into ``num_reward_tokens`` (4) quantiles of
   ``n // 4`` rollouts, the remainder going to the last (worst) one (``quark_trainer.DataPool.sort_and_get``); with
   ``train_on_best_quantile`` only the top quantile is kept, with no control token (the reference's setting). The
   pool is per process, as the reference's (each GPU sorts its own rollouts);
4. the pool holds TEXT: the kept pairs are re-tokenised from the prompt and the decoded response (special tokens
   skipped) as ``quark_trainer.rollout`` hands them to ``data_preprocessor.QueryResponseDataset``: the response
   targets are ``tokenizer(query + response)`` after the query's tokens, so the EOS that ended a rollout is never a
   target; a pair whose re-tokenised query outgrows ``query_len`` is dropped, a response that outgrows
   ``response_len`` is cut to it (the reference drops the pair; see
   :func:`~alpaca_farm_env.rl.rollout.retokenize_pairs`). Re-tokenising rather than masking the EOS position gives the
   reference's targets exactly, also where the decode/encode round trip is not the identity (a non-canonical
   sampled segmentation, invalid UTF-8, a sampled special token);
5. ONE optimizer step over ``step_batch_size`` sequences drawn from the kept pairs by an infinite shuffled loader
   (256 of 128 = two passes), accumulated over micro-batches: per-token loss ``NLL + kl_coef * KL(pi || pi_ref)``
   over the full (original) vocabulary, ``- entropy_coef * H`` (0: the paper drops the entropy term), zeroed at
   pads, mean over all positions (``quark_trainer.compute_loss``); grad-norm clip 1.0, AdamW (lr 3e-6, eps 1e-5);
   the trainer steps the linear schedule (5 warm-up steps).

The all-quantile variant (``train_on_best_quantile=False``), as ``src/alpaca_farm/rl/quark_trainer.py``:

* reward tokens: ``<reward_0>`` .. ``<reward_{K-1}>`` are added as additional special tokens (``make_tokenizer``),
  and their embedding rows, input and output, are the mean of the old rows plus N(0, 1) noise times the old rows'
  per-dimension (unbiased) std (``make_models`` -> ``utils.stable_resize_token_embeddings(...,
  jitter_new_embeddings=True)``; here the noise is seeded by ``seed``);
* the policy reads ``<s><reward_k><prompt>`` for a pair of quantile ``k``; the reference model reads the same ids
  with the reward token's attention masked out (``compute_loss``: ``queries_no_quark`` from ``ignore_tokens``), so it
  sees the bare prompt; its own reward-token rows never matter, and the KL is over the original vocabulary;
* remainder rows (``n`` not divisible by ``K``) go to the last quantile, behind ``<reward_{K-1}>`` (step 3);
* rollouts and answers are conditioned on ``<reward_0>`` (``data_utils.make_rl_data_module``:
  ``RewardConditioningPromptPostprocessor``), except the first step's rollouts, sampled without it
  (``quark_trainer.rollout``: "Must ignore the reward token on first generation").

Not available in lean mode (the new embedding rows would have to train outside the LoRA adapter). In the
best-quantile variant the reference adds the reward tokens too, unused, only as 4 extra output rows of the policy's
softmax; here that variant's vocabulary stays as it is.

Lean mode: LoRA on the policy, the reference = the adapter disabled. Quark has no value model.
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch

from ..rl import (
    RLConfig, RLMethod, epoch_order, frozen_copy, quark_loss, reference_of, response_logits, sequence_inputs, with_lora,
)
from ..rl.rollout import decode_responses, retokenize_pairs
from ..utils import stable_hash
from .base import register_agent
from .common import reward_of_stage
from .sft import BaseAgent


@dataclass
class QuarkConfig(RLConfig):
    """Quark's hyper-parameters: :class:`~alpaca_farm_env.rl.config.RLConfig`'s shared fields with
    ``examples/scripts/rlhf_quark.sh``'s learning rate and KL coefficient, plus Quark's own (reference
    ``examples/rlhf_quark.py`` ``TrainingArguments``). One optimizer step per Quark step: ``step_batch_size`` 256 is
    2 per device x 32 accumulation x 4 GPUs in ``rlhf_quark.sh``."""

    learning_rate: float = 3e-6
    """AdamW learning rate, the peak of the linear schedule. ``rlhf_quark.sh``: 3e-6."""
    kl_coef: float = 0.05
    """Weight of ``KL(pi || pi_ref)`` (over the full vocabulary) in the per-token loss. ``rlhf_quark.sh``: 0.05."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus ``- entropy_coef * H(pi)``; 0 because the paper drops Quark's entropy term
    (App. B.2; ``examples/rlhf_quark.py``)."""
    num_reward_tokens: int = 4
    """Reward quantiles the pool is cut into (and, in the all-quantile variant, reward tokens
    ``<reward_0>``..``<reward_{K-1}>``). ``examples/rlhf_quark.py``: 4."""
    train_on_best_quantile: bool = True
    """Train on the best quantile only, with no reward token (the reference's setting); False: every quantile behind
    its reward token. ``examples/rlhf_quark.py``: True."""


def reward_quantiles(scores: Sequence[float], k: int) -> list[list[int]]:
    """Returns the rollout indices cut into ``k`` reward quantiles, best first: sorted by score, descending (ties in
    rollout order), ``len(scores) // k`` per quantile and the remainder in the LAST (worst) one (reference
    ``quark_trainer.DataPool.sort_and_get``: ``chunk_sizes[-1] += size % num_reward_tokens``)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    q = len(order) // k
    return [order[j * q: (j + 1) * q] for j in range(k - 1)] + [order[(k - 1) * q:]]


def ignore_tokens(ids: torch.Tensor, mask: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Returns a copy of the attention ``mask`` with the positions of ``token_ids`` in ``ids`` set to 0 (reference
    ``quark_trainer.ignore_tokens``); with position ids rebuilt from the mask, the model reads the sequence as if those
    tokens were not there."""
    out = mask.clone()
    for t in token_ids:
        out[ids == t] = 0
    return out


def reward_token(k: int) -> str:
    """Returns the special token of reward quantile ``k`` (0 = the best)."""
    return f"<reward_{k}>"


def add_reward_tokens(model: Any, tokenizer: Any, k: int, seed: int) -> int:
    """Add ``<reward_0>`` .. ``<reward_{k-1}>`` as special tokens; new input (and untied output) embedding rows =
    mean of the old rows + N(0, 1) x their per-dimension std (reference ``quark_trainer``). Returns the original
    vocabulary size (the KL is taken over it)."""
    n_old = model.get_input_embeddings().weight.shape[0]
    tokenizer.add_special_tokens({"additional_special_tokens": [reward_token(i) for i in range(k)]})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    gen = torch.Generator().manual_seed(stable_hash("reward-tokens", seed))
    with torch.no_grad():
        mats = [model.get_input_embeddings().weight]
        out = model.get_output_embeddings()
        if out is not None and out.weight is not mats[0]:
            mats.append(out.weight)
        for w in mats:
            old = w[:n_old].float()
            noise = torch.randn((w.shape[0] - n_old, w.shape[1]), generator=gen)
            w[n_old:] = (old.mean(0) + noise * old.std(0)).to(w.dtype)
    return n_old


@register_agent("quark")
class QuarkAgent(RLMethod, BaseAgent):
    """Quark. ``fit(envs, policy=..., reward=..., output_dir=...)``; ``respond`` samples from the trained policy
    (behind ``<reward_0>`` in the all-quantile variant). Constructor as :class:`~.ppo.PPOAgent`, ``config``:
    :class:`QuarkConfig`."""

    name = "quark"
    CONFIG_CLASS: ClassVar[type] = QuarkConfig
    CSV_FIELDS: ClassVar[tuple[str, ...]] = (
        "reward_mean", "reward_std", "reward_kept_mean", "loss", "nll", "kl", "entropy", "kl_coef", "response_length",
        "tokens_per_s", "lr")

    def fit(self, envs: Mapping[str, Any], *, policy: Any = None, reward: Any = None, output_dir: Any = None,
            **_: Any) -> None:
        """Train from the ``policy`` stage against the ``reward`` stage on ``envs["unlabeled"]`` (see
        :meth:`RLMethod.train <alpaca_farm_env.rl.method.RLMethod.train>`); returns None."""
        self.train(envs, policy=policy, reward=None if reward is None else reward_of_stage(reward),
                   output_dir=output_dir)

    @property
    def prefix(self) -> str:
        """The text before every prompt: ``<reward_0>`` in the all-quantile variant, else nothing."""
        return "" if self.config.train_on_best_quantile else reward_token(0)

    # ------------------------------------------------------------------------------------------------ models
    def build(self, policy: Any, reward_backend: Any) -> Any:
        """Returns the policy to train (a copy of the stage's; LoRA in lean mode; reward tokens added in the
        all-quantile variant) and keeps the frozen reference (None in lean mode)."""
        cfg, acc = self.config, self.accelerator
        if cfg.num_reward_tokens < 1 or cfg.rollout_batch_size // acc.num_processes < cfg.num_reward_tokens:
            raise ValueError("quark needs num_reward_tokens >= 1 and at least that many rollouts per process")
        self.tokenizer, self.start_name = policy.tokenizer, policy.name
        model = copy.deepcopy(policy.model)
        self.n_vocab = model.get_output_embeddings().weight.shape[0]
        if not cfg.train_on_best_quantile:
            if cfg.lean:
                raise ValueError("quark's all-quantile variant (reward tokens) is not available in lean mode")
            self.tokenizer = copy.deepcopy(policy.tokenizer)  # the stage's tokenizer stays as it is
            self.n_vocab = add_reward_tokens(model, self.tokenizer, cfg.num_reward_tokens, cfg.seed)
        self.reward_token_ids = self.tokenizer.convert_tokens_to_ids(
            [reward_token(k) for k in range(cfg.num_reward_tokens)]) if not cfg.train_on_best_quantile else []
        if cfg.lean:
            model = with_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
            self.ref = None
        else:
            self.ref = frozen_copy(model).to(acc.device)
        return model.eval()  # no dropout

    def current_policy(self) -> Any:
        from ..models import Policy

        return Policy(self.trainer.unwrapped, self.tokenizer, name=f"{self.start_name}:quark")

    def final_policy(self) -> Any:
        from ..models import Policy

        model = copy.deepcopy(self.trainer.unwrapped)
        if self.config.lean:
            model = model.merge_and_unload()
        return Policy(model.eval(), self.tokenizer, name=f"{self.start_name}:quark")

    def respond(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        """One response per observation, conditioned on the best quantile's token in the all-quantile variant."""
        if self.prefix:
            observations = [{**o, "prompt": self.prefix + (o.get("prompt") or "")} for o in observations]
        return super().respond(observations)

    # ------------------------------------------------------------------------------------------------ one step
    def step(self, step: int) -> dict[str, Any]:
        """One Quark step (module docstring, 1-5). Returns the metrics row (``CSV_FIELDS`` but ``lr``)."""
        cfg, tr = self.config, self.trainer
        t0 = time.time()
        # 1-2. a fresh pool: this step's rollouts only (quark_trainer: clear_data_pool_on_each_rollout); the first
        # step samples without the reward token (quark_trainer.rollout ignores it at the first step)
        chunks, scores, prompts = tr.rollouts(step, tr.unwrapped, self.tokenizer, prefix=self.prefix if step else "")
        responses = torch.cat([c["responses"] for c in chunks])
        rmask = torch.cat([c["response_mask"] for c in chunks])
        n_tokens = tr.all_reduce(rmask.sum().float().cpu())
        t_rollout = time.time() - t0
        # 3. sort by reward, cut into quantiles; keep the best one (or all, behind their quantile tokens)
        quantiles = reward_quantiles(scores, cfg.num_reward_tokens)
        kept = [(i, 0) for i in quantiles[0]] if cfg.train_on_best_quantile else [
            (i, k) for k, idx in enumerate(quantiles) for i in idx]
        # the pool holds text, re-tokenised for training (quark_trainer.rollout -> QueryResponseDataset): the
        # response targets are the decoded response's tokens, so EOS is never a target
        texts = decode_responses(self.tokenizer, responses)
        data, survivors = retokenize_pairs(
            self.tokenizer, [("" if cfg.train_on_best_quantile else reward_token(k)) + prompts[i] for i, k in kept],
            [texts[i] for i, _ in kept], cfg.query_len, cfg.response_len)
        data = {k: v.to(responses.device) for k, v in data.items()}
        if not cfg.train_on_best_quantile:  # the reference model reads the query with its reward token masked out
            data["ref_query_mask"] = ignore_tokens(data["queries"], data["query_mask"], self.reward_token_ids)
        # 4. one optimizer step over step_batch_size sequences from an infinite shuffled loader of the kept pairs
        losses = self._optimise(data, len(survivors), step)
        sc = torch.tensor(scores)
        reward_mean = tr.global_mean(float(sc.mean()))
        reward_sq = tr.global_mean(float((sc ** 2).mean()))
        return {
            "reward_mean": reward_mean, "reward_std": max(0.0, reward_sq - reward_mean ** 2) ** 0.5,
            "reward_kept_mean": tr.global_mean(float(sc[quantiles[0]].mean())),
            **losses, "kl_coef": cfg.kl_coef,
            "response_length": tr.global_mean(float(rmask.sum(1).float().mean())),
            "tokens_per_s": float(n_tokens) / max(t_rollout, 1e-9),
        }

    def _optimise(self, data: Mapping[str, torch.Tensor], n_kept: int, step: int) -> dict[str, float]:
        """One optimizer step over ``step_batch_size`` (per process: divided by the process count) sequences drawn
        from the ``n_kept`` pairs of ``data`` by an infinite shuffled loader, accumulated over micro-batches.
        Returns the means of ``loss``, ``nll``, ``kl`` and ``entropy`` over micro-batches and processes."""
        cfg, tr, model = self.config, self.trainer, self.trainer.module
        if float(tr.all_reduce(torch.tensor([float(n_kept == 0)]))) > 0:  # every process skips together
            warnings.warn("quark: no kept pair fits query_len after re-tokenisation; no update this step",
                          stacklevel=2)
            return {k: float("nan") for k in ("loss", "nll", "kl", "entropy")}
        per_step = cfg.step_batch_size // tr.accelerator.num_processes
        idx: list[int] = []
        p = 0
        while len(idx) < per_step:
            idx.extend(epoch_order(n_kept, stable_hash(cfg.seed, tr.rank), step * 1000 + p, "quark-pool"))
            p += 1
        idx = idx[:per_step]
        micro = max(1, min(cfg.step_per_device_batch_size, per_step))
        stats: dict[str, list[float]] = {"loss": [], "nll": [], "kl": [], "entropy": []}

        def loss_fn(ids):
            b = {k: v[ids] for k, v in data.items()}
            width = int(b["query_mask"].sum(1).max())  # drop columns that are padding in the whole micro-batch
            inputs = sequence_inputs(b["queries"][:, -width:], b["query_mask"][:, -width:], b["responses"],
                                     b["response_mask"])
            logits = response_logits(model, inputs, cfg.response_len, cfg.temperature)
            ref_inputs = inputs if "ref_query_mask" not in b else sequence_inputs(
                b["queries"][:, -width:], b["ref_query_mask"][:, -width:], b["responses"], b["response_mask"])
            # the reference at the policy's precision (the prepared module's autocast)
            with torch.no_grad(), reference_of(tr.unwrapped, self.ref) as ref, tr.accelerator.autocast():
                ref_logits = response_logits(ref, ref_inputs, cfg.response_len, cfg.temperature)[..., : self.n_vocab]
            loss, st = quark_loss(logits, ref_logits, b["responses"], b["response_mask"], cfg.kl_coef,
                                  cfg.entropy_coef, temperature=1.0)  # the logits are already divided by it
            stats["loss"].append(float(loss.detach()))
            for k in ("nll", "kl", "entropy"):
                stats[k].append(float(st[k]))
            return loss

        tr.accumulate(model, [idx[i: i + micro] for i in range(0, len(idx), micro)], loss_fn)
        mean = lambda xs: tr.global_mean(sum(xs) / max(1, len(xs)))  # noqa: E731
        return {k: mean(v) for k, v in stats.items()}
