"""What PPO and Quark share, written once: the rollout through the env, tokenisation, per-token log-probs and values,
whitening, reward shaping, GAE, the PPO and Quark losses, the KL controllers, the per-step CSV log, checkpoints, and
:class:`RLAgentBase` (the fit skeleton: reward resolution, env sharding, Accelerate, resume, eval hook).

Reference (tatsu-lab/alpaca_farm): ``src/alpaca_farm/rl/ppo_trainer.py`` (``_shape_reward``, ``_estimate_advantage``,
``rollout``, ``compute_loss``), ``rl/rl_trainer.py`` (``step``, ``step_with_rollouts``, ``evaluate``),
``rl/kl_controller.py``, ``rl/quark_trainer.py``, ``torch_ops.py`` (``whiten``), ``models/rl_models.py`` (logits /
temperature, the value read from the hidden state before each response token). Reference notes Sec. 5.4, 5.5, 8.

The env returns the raw reward score of each episode (one batched reward call per ``step``); every shaping (KL penalty,
whitening) is the agent's, as in the reference, where the reward model's output is shaped inside the trainer.
"""
from __future__ import annotations

import abc
import copy
import csv
import io
import json
import math
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..envs.vector_env import AlpacaFarmVectorEnv
from ..utils import atomic_write_text, digest, stable_hash
from .sft import SFTAgent

Tensor = torch.Tensor
AllReduce = Callable[[Tensor], Tensor]  # sums a tensor over processes (identity on one process)


# ================================================================================================ pure tensor math
def whiten(x: Tensor, mask: Tensor | None = None, shift_mean: bool = True, all_reduce: AllReduce | None = None,
           eps: float = 1e-8) -> Tensor:
    """``(x - mean) / sqrt(var + eps)``, plus ``mean`` back when ``shift_mean`` is False (reference
    ``torch_ops.whiten``: population variance, eps 1e-8).

    Statistics are over every entry of ``x`` (the reference includes pad positions) or over the entries where
    ``mask`` is true; entries outside the mask are returned as 0. ``all_reduce`` (a function summing a tensor over
    processes, e.g. ``accelerator.reduce(t, "sum")``) makes the statistics those of the whole rollout batch across
    processes: the sum, the sum of squares and the count are all-reduced, then mean and variance computed from them.
    """
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.bool()
    xf = x.float()
    stats = torch.stack([(xf * m).sum(), (xf * xf * m).sum(), m.sum().float()])
    if all_reduce is not None:
        stats = all_reduce(stats)
    total, total_sq, count = stats[0], stats[1], stats[2].clamp_min(1.0)
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    out = (xf - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return (out * m).to(x.dtype)


def shape_rewards(logp: Tensor, logp_ref: Tensor, scores: Tensor, response_mask: Tensor,
                  kl_coef: float) -> dict[str, Tensor]:
    """Per-token rewards of PPO (reference ``ppo_trainer._shape_reward``).

    ``kl_t = max(logp_t - logp_ref_t, 0)``; ``non_score_t = -kl_coef * kl_t``; the score of each sequence is added at
    its last response token (``response_mask.sum(1) - 1``: the EOS when one was generated). ``response_mask`` marks
    the real response tokens (True up to and including the first EOS), so a pad id equal to the EOS id (the
    reference's off-by-one) cannot move the terminal position. Returns ``shaped``, ``non_score`` and ``kl``.
    """
    kl = torch.clamp(logp - logp_ref, min=0.0)
    non_score = -kl_coef * kl
    shaped = non_score.clone()
    terminal = (response_mask.long().sum(dim=1) - 1).clamp_min(0)
    shaped[torch.arange(shaped.shape[0], device=shaped.device), terminal] += scores.to(shaped.dtype)
    return {"shaped": shaped, "non_score": non_score, "kl": kl}


def gae(rewards: Tensor, values: Tensor, mask: Tensor | None = None, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the response window (reference ``ppo_trainer._estimate_advantage``).

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V_T = 0`` past the window; ``A_t = delta_t + gamma * lam *
    A_{t+1}``; returns ``(advantages, returns = advantages + values)``. Without ``mask`` every position of the window
    takes part (the reference: pads included, V = 0 after the last column). With ``mask``, the episode ends at its last
    masked position (nothing is bootstrapped from outside the mask) and outputs outside it are 0.
    """
    B, T = rewards.shape
    m = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    out = []
    for t in reversed(range(T)):
        next_v = values[:, t + 1] * m[:, t + 1] if t < T - 1 else torch.zeros_like(last)
        cont = m[:, t + 1] if t < T - 1 else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last * cont
        out.append(last)
    adv = torch.stack(out[::-1], dim=1) * m
    return adv, (adv + values) * m


def _mean(x: Tensor, mask: Tensor | None) -> Tensor:
    return x.mean() if mask is None else (x * mask).sum() / mask.sum().clamp_min(1)


def ppo_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, cliprange: float,
                    mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate (reference ``ppo_trainer.compute_loss``): ``mean(max(-A * r, -A * clip(r, 1-c, 1+c)))`` with
    ``r = exp(logp - old_logp)``. The mean is over all positions (the reference, pads included: there ``logp`` is 0,
    r = 1 and no gradient flows) or over ``mask``. Stats: ``clipfrac`` (share where the clipped term is larger),
    ``approxkl`` (``0.5 * mean((logp - old_logp)^2)``)."""
    ratio = torch.exp(logp - old_logp)
    l1 = -advantages * ratio
    l2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = _mean(torch.maximum(l1, l2), mask)
    with torch.no_grad():
        stats = {"clipfrac": _mean((l2 > l1).float(), mask), "approxkl": 0.5 * _mean((logp - old_logp) ** 2, mask)}
    return loss, stats


def ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, cliprange_value: float,
                   mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss (reference ``ppo_trainer.compute_loss``): ``0.5 * mean(max((V - R)^2, (V_clip - R)^2))``,
    ``V_clip = clip(V, V_old - c, V_old + c)``. Stat: ``clipfrac``."""
    vclip = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    l1, l2 = (values - returns) ** 2, (vclip - returns) ** 2
    loss = 0.5 * _mean(torch.maximum(l1, l2), mask)
    with torch.no_grad():
        stats = {"clipfrac": _mean((l2 > l1).float(), mask)}
    return loss, stats


def quark_loss(logits: Tensor, ref_logits: Tensor, labels: Tensor, mask: Tensor, kl_coef: float,
               entropy_coef: float = 0.0, temperature: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Quark's per-token loss (reference ``rl/quark_trainer.py`` ``compute_loss``; notes Sec. 5.5):
    ``-log pi(y_t) + kl_coef * KL(pi(.|ctx) || pi_ref(.|ctx)) - entropy_coef * H(pi(.|ctx))``, the KL over the full
    vocabulary of ``ref_logits`` (extra rows of ``logits``, e.g. reward tokens, are cut off), logits divided by the
    temperature; all terms zeroed where ``mask`` is false, then the mean over ALL positions (B x T), as the reference.
    ``logits``: [B, T, V]; ``labels``: [B, T] (the response tokens); ``mask``: [B, T]."""
    v = ref_logits.shape[-1]
    logp_all = F.log_softmax(logits[..., :v].float() / temperature, dim=-1)
    ref_all = F.log_softmax(ref_logits.float() / temperature, dim=-1)
    m = mask.float()
    nll = -torch.gather(F.log_softmax(logits.float() / temperature, dim=-1), -1, labels.unsqueeze(-1)).squeeze(-1)
    kl = (logp_all.exp() * (logp_all - ref_all)).sum(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    per_token = (nll + kl_coef * kl - entropy_coef * ent) * m
    loss = per_token.mean()
    with torch.no_grad():
        stats = {"nll": (nll * m).sum() / m.sum().clamp_min(1), "kl": (kl * m).sum() / m.sum().clamp_min(1),
                 "entropy": (ent * m).sum() / m.sum().clamp_min(1)}
    return loss, stats


class FixedKLController:
    """A constant KL coefficient (the reference's default, ``adaptive_kl=False``)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def step(self, current_kl: float) -> None:
        return None


class AdaptiveKLController:
    """Reference ``rl/kl_controller.py``: ``value *= 1 + k_beta * clip(current_kl / target_kl - 1, -0.2, 0.2)`` after
    each step (``current_kl``: the mean over sequences of the summed per-token KL, averaged over processes)."""

    def __init__(self, kl_coef: float, target_kl: float = 6.0, k_beta: float = 0.1):
        self.value, self.target_kl, self.k_beta = float(kl_coef), float(target_kl), float(k_beta)

    def step(self, current_kl: float) -> None:
        err = min(max(current_kl / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + self.k_beta * err


def make_kl_controller(kl_coef: float, adaptive: bool = False, target_kl: float = 6.0, k_beta: float = 0.1):
    return AdaptiveKLController(kl_coef, target_kl, k_beta) if adaptive else FixedKLController(kl_coef)


# ================================================================================================ tokens
def encode_queries(tokenizer: Any, prompts: Sequence[str], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-padded query ids and attention mask, as wide as the longest prompt of the batch (the reference pads to
    ``query_len``; with position ids rebuilt from the mask both give the same logits). Prompts longer than
    ``query_len`` never get here: the rollout env holds only the prompts that fit (:func:`query_fits`)."""
    ids = [tokenizer(p).input_ids for p in prompts]
    width = max(len(x) for x in ids)
    out = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x):] = 1
    return out, mask


def query_fits(tokenizer: Any, prompt: str, query_len: int) -> bool:
    """Whether a prompt is at most ``query_len`` tokens (longer ones are dropped from RL training: reference
    ``data_preprocessor.QueryDataset``)."""
    return len(tokenizer(prompt).input_ids) <= query_len


def pad_responses(generated: Tensor, eos_ids: Sequence[int], pad_id: int, response_len: int) -> tuple[Tensor, Tensor]:
    """Generated tokens -> ``(responses [B, response_len], mask)``: everything after the first EOS becomes the pad
    id and the mask is True up to and including that EOS (reference: EOS kept, then pads; ``rlhf_ppo.py``)."""
    B = generated.shape[0]
    out = torch.full((B, response_len), pad_id, dtype=torch.long, device=generated.device)
    g = generated[:, :response_len]
    out[:, : g.shape[1]] = g
    is_eos = torch.zeros_like(out, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= out == e
    is_eos[:, g.shape[1]:] = False
    # a position is real when no EOS came strictly before it
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    mask = before == 0
    mask[:, g.shape[1]:] = False
    out = torch.where(mask, out, torch.full_like(out, pad_id))
    return out, mask


def position_ids(attention_mask: Tensor) -> Tensor:
    """Position ids from a (left-padded) attention mask, as ``generate`` builds them, so that the forward passes
    that score a rollout see the positions it was sampled with."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp_min(0)


def sequence_inputs(queries: Tensor, query_mask: Tensor, responses: Tensor, response_mask: Tensor) -> dict[str, Tensor]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` of ``[queries; responses]``."""
    ids = torch.cat([queries, responses], dim=1)
    attn = torch.cat([query_mask.long(), response_mask.long()], dim=1)
    return {"input_ids": ids, "attention_mask": attn, "position_ids": position_ids(attn)}


def response_logits(model: Any, inputs: Mapping[str, Tensor], response_len: int, temperature: float) -> Tensor:
    """Logits that predict each response token (reference ``rl_models.AutoregressivePolicy.forward``:
    ``logits[:, -response_len - 1 : -1] / temperature``)."""
    logits = model(**inputs, use_cache=False).logits
    return logits[:, -response_len - 1: -1].float() / temperature


def token_logprobs(logits: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(logp, entropy)`` per response token from ``response_logits``; ``logp`` is 0 at pads (the reference's
    ``compute_logprobs(..., ignore_index=pad)``), the entropy is of the full distribution."""
    logp_all = F.log_softmax(logits, dim=-1)
    logp = torch.gather(logp_all, -1, labels.unsqueeze(-1)).squeeze(-1) * mask
    ent = -(logp_all.exp() * logp_all).sum(-1)
    return logp, ent


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch RNG seeded inside the block, the caller's state untouched."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        torch.manual_seed(int(seed))
        yield


@torch.no_grad()
def sample_responses(model: Any, tokenizer: Any, prompts: Sequence[str], *, response_len: int, temperature: float,
                     seed: int, eos_ids: Sequence[int], prefix: str = "") -> dict[str, Any]:
    """Sample one response per prompt (top_p 1.0, top_k 0: reference ``rlhf_ppo.sh`` rollouts), return the query
    and response tensors (padded as above) and the decoded response texts (special tokens skipped, as the reference
    decodes them for the reward model)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    queries, qmask = encode_queries(tokenizer, [prefix + p for p in prompts], pad)
    queries, qmask = queries.to(device), qmask.to(device)
    with seeded(seed):
        seqs = model.generate(input_ids=queries, attention_mask=qmask, do_sample=True, temperature=temperature,
                              top_p=1.0, top_k=0, max_new_tokens=response_len, pad_token_id=pad,
                              eos_token_id=list(eos_ids) or None)
    responses, rmask = pad_responses(seqs[:, queries.shape[1]:], eos_ids, pad, response_len)
    texts = [t.replace("\x00", "") for t in tokenizer.batch_decode(responses, skip_special_tokens=True)]
    return {"queries": queries, "query_mask": qmask, "responses": responses, "response_mask": rmask, "texts": texts}


def left_pad_to(x: Tensor, width: int, value: int) -> Tensor:
    """Left-pad the last dimension of ``x`` to ``width``."""
    return F.pad(x, (width - x.shape[-1], 0), value=value)


def cat_rollouts(chunks: Sequence[Mapping[str, Tensor]], pad_id: int) -> dict[str, Tensor]:
    """Concatenate rollout chunks; queries (and their masks) are left-padded to the widest chunk first."""
    width = max(c["queries"].shape[1] for c in chunks)
    out: dict[str, Tensor] = {}
    for k in chunks[0]:
        if k == "queries":
            out[k] = torch.cat([left_pad_to(c[k], width, pad_id) for c in chunks])
        elif k == "query_mask":
            out[k] = torch.cat([left_pad_to(c[k], width, 0) for c in chunks])
        else:
            out[k] = torch.cat([c[k] for c in chunks])
    return out


# ================================================================================================ models
class ValueModel(torch.nn.Module):
    """A transformer trunk (``AutoModel``-style, returning ``last_hidden_state``) plus a scalar head, zero-initialised
    (reference ``rl_models.make_value_with_base_model``: the value head of the RM trunk starts at zero)."""

    def __init__(self, trunk: Any, hidden_size: int, trainable_trunk: bool = True):
        super().__init__()
        self.trunk = trunk
        self.head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        if not trainable_trunk:
            for p in trunk.parameters():
                p.requires_grad_(False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, response_len: int) -> Tensor:
        """Values of the response positions: the value of response token t is read from the hidden state of the token
        before it (reference ``rl_models.Value.forward``: ``last_hidden_state[:, query_len - 1 : -1]``)."""
        h = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).last_hidden_state
        h = h[:, -response_len - 1: -1]
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1)


def trunk_of(model: Any) -> Any:
    """The transformer trunk of a ``*ForCausalLM`` / ``*ForSequenceClassification`` (``base_model``)."""
    base = getattr(model, "base_model", model)
    if hasattr(base, "get_base_model"):  # a peft wrapper
        base = base.get_base_model().base_model
    return base


def same_vocab(tok_a: Any, tok_b: Any) -> bool:
    """Whether two tokenizers map the same strings to the same ids (the reference requires it of policy and RM)."""
    return tok_a is tok_b or tok_a.get_vocab() == tok_b.get_vocab()


def with_lora(model: Any, r: int, alpha: int | None = None, dropout: float = 0.0) -> Any:
    """LoRA (peft) on the attention and MLP projections; the frozen base is the reference policy
    (``with model.disable_adapter():``)."""
    from peft import LoraConfig, get_peft_model

    targets = [n for n in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
               if any(name.endswith(n) for name, _ in model.named_modules())]
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha or 2 * r, lora_dropout=dropout,
                                            target_modules=targets or None, task_type="CAUSAL_LM"))


@contextmanager
def reference_of(model: Any, ref_model: Any | None) -> Iterator[Any]:
    """The reference policy: ``ref_model`` when there is one, else ``model`` with its LoRA adapter disabled."""
    if ref_model is not None:
        yield ref_model
    else:
        with model.disable_adapter():
            yield model


# ================================================================================================ logging, state
class CSVLogger:
    """Per-step metrics appended to a CSV: the header written once, each row flushed and fsynced (a crash loses at
    most the row being written). ``resume(step)`` drops rows after ``step`` (written after the last checkpoint and
    about to be redone), so a resumed run never duplicates a step."""

    def __init__(self, path: str | os.PathLike, fields: Sequence[str]):
        self.path, self.fields = Path(path), list(fields)

    def resume(self, step: int) -> None:
        if not self.path.is_file():
            return
        rows = list(csv.DictReader(io.StringIO(self.path.read_text(encoding="utf-8"))))
        keep = [r for r in rows if r.get("step") and int(r["step"]) <= step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(keep)
        atomic_write_text(self.path, buf.getvalue())

    def log(self, row: Mapping[str, Any]) -> None:
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        return list(csv.DictReader(io.StringIO(self.path.read_text(encoding="utf-8"))))


# ================================================================================================ env plumbing
def env_rows(env: Any) -> list[dict[str, Any]]:
    """The prompt rows an AlpacaFarm env (single or vector, wrapped or not) already holds."""
    base = getattr(env, "unwrapped", env)
    if not hasattr(base, "rows") or not hasattr(base, "_init_source"):
        raise TypeError(f"{type(env).__name__} is not an AlpacaFarm-v0 env (gym.make / gym.make_vec('AlpacaFarm-v0'))")
    return list(base.rows)


def env_episode(env: Any, positions: Sequence[int], respond: Callable[[list[str]], list[str]]) -> tuple[list[str], list[str], list[float]]:
    """One vector-env step on chosen rows: ``reset(options={"index": positions})`` puts those prompts in the
    sub-envs, ``respond(prompts)`` answers them, ``step(responses)`` scores them in one reward call. Returns
    ``(prompts, responses, raw scores)``."""
    obs, _ = env.reset(options={"index": list(positions)})
    prompts = list(obs["prompt"])
    responses = respond(prompts)
    _, rewards, *_ = env.step(list(responses))
    return prompts, list(responses), [float(r) for r in rewards]


def epoch_order(n: int, seed: int, epoch: int, salt: str) -> list[int]:
    """A permutation of ``range(n)`` that is a stable function of ``(salt, seed, epoch)``."""
    return sorted(range(n), key=lambda i: stable_hash(salt, seed, epoch, i))


def positions_for_step(n_rows: int, per_step: int, step: int, seed: int, salt: str) -> list[int]:
    """The row positions of step ``step`` (0-based): consecutive slices of stable per-epoch permutations, so every
    prompt is used once per epoch and a resumed run sees the prompts the uninterrupted one would."""
    out, start = [], step * per_step
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), n_rows)
        order = epoch_order(n_rows, seed, epoch, salt)
        out.extend(order[offset: offset + per_step - len(out)])
    return out


# ================================================================================================ the agent skeleton
class RLAgentBase(SFTAgent, abc.ABC):
    """The fit skeleton PPO and Quark share.

    ``fit(envs, policy=..., reward=..., output_dir=...)``:

    1. the reward: the constructor's ``reward=`` if given, else the ``reward`` stage (the trained reward model), else
       the reward of ``envs["unlabeled"]`` itself; the benchmark's evaluator is refused (it would overstate the gain);
    2. the prompts: the rows of ``envs["unlabeled"]`` that fit ``query_len``, the last ``n_eval_prompts`` held out for
       the periodic eval, the rest sharded over processes (``rows[rank::world]``); each process steps its own
       vector env over its shard (``AlpacaFarmVectorEnv.from_env``), one reward call per ``step``;
    3. Accelerate: models and optimizer through ``accelerator.prepare`` (DDP / FSDP / DeepSpeed by ``accelerate
       launch``), statistics all-reduced over processes;
    4. per step: ``self._train_step`` (PPO or Quark), a CSV row, a checkpoint every ``save_steps``, an eval every
       ``eval_steps``; a rerun resumes from the last checkpoint.
    """

    ENVS: ClassVar[dict[str, dict[str, Any]]] = {
        "unlabeled": {"id": "AlpacaFarm-v0", "split": "unlabeled", "reward": "length"},
    }
    STAGES: ClassVar[tuple[str, ...]] = ("policy", "reward", "output_dir")
    CSV_FIELDS: ClassVar[tuple[str, ...]] = ()
    trains = True

    def __init__(self, policy: Any = None, *, config: Any = None, reward: Any = None,
                 reward_kwargs: dict[str, Any] | None = None, evaluator: Any = None,
                 evaluate: Callable[[Any], Mapping[str, Any]] | None = None, accelerator: Any = None, **kwargs: Any):
        super().__init__(policy, **kwargs)
        self.config = self._as_config(config)
        self.reward_override = (reward, dict(reward_kwargs or {})) if reward is not None else None
        self.evaluator = evaluator
        self.evaluate_hook = evaluate
        self.accelerator = accelerator
        self.fitted = False
        self.summary: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.reward_name = ""

    # -- to implement --------------------------------------------------------------------------------------------
    CONFIG_CLASS: ClassVar[type] = object

    def _as_config(self, config: Any) -> Any:
        if config is None:
            return self.CONFIG_CLASS()
        return config if isinstance(config, self.CONFIG_CLASS) else self.CONFIG_CLASS(**dict(config))

    # abstract: PPO and Quark implement _build, _train_step, _current_policy and _final_policy; a subclass missing
    # one fails at construction (abc), not in the middle of a fit
    @abc.abstractmethod
    def _build(self, policy: Any, reward_backend: Any) -> None:
        """Create the trained modules, optimizer and scheduler from the start policy and the reward backend."""

    @abc.abstractmethod
    def _train_step(self, step: int) -> dict[str, Any]:
        """One RL step (rollouts, scoring, updates); returns the step's metrics row."""

    # -- reward ---------------------------------------------------------------------------------------------------
    def _resolve_reward(self, env: Any, stage: Any) -> tuple[Any, dict[str, Any]]:
        from ..rewards.annotator_reward import reward_is_evaluator
        from .common import reward_of_stage

        if self.reward_override is not None:
            spec, kwargs = self.reward_override
        elif stage is not None:
            spec, kwargs = reward_of_stage(stage)
        else:  # the env's own reward
            base = getattr(env, "unwrapped", env)
            spec, kwargs = base.reward_spec, {k: v for k, v in (base.reward_kwargs or {}).items()}
        if reward_is_evaluator(spec, kwargs, self.evaluator):
            raise ValueError(f"{self.name} would learn from the evaluator's judge; that overstates the gain. Use the "
                             "trained reward model (the reward stage) or another reward backend")
        return spec, kwargs

    # -- fit ------------------------------------------------------------------------------------------------------
    def fit(self, envs: Mapping[str, Any], *, policy: Any = None, reward: Any = None,
            output_dir: str | os.PathLike | None = None, **_: Any) -> None:
        from dataclasses import asdict

        from tqdm.auto import tqdm

        cfg = self.config
        if output_dir is None:
            raise ValueError(f"{self.name} needs the output_dir stage (checkpoints, metrics.csv, the trained policy)")
        if not envs or "unlabeled" not in envs:
            raise ValueError(f"{self.name} needs envs['unlabeled']: {self.ENVS['unlabeled']}")
        if policy is not None:
            self._policy = policy
        if self._policy is None:
            raise ValueError(f"{self.name} needs the policy stage (the SFT policy it starts from)")
        start = self.policy
        env = envs["unlabeled"]
        spec, spec_kwargs = self._resolve_reward(env, reward)
        from ..envs.source import get_reward_backend

        backend = get_reward_backend(spec, spec_kwargs)
        self.reward_spec, self.reward_kwargs = spec, spec_kwargs
        self.reward_name = str(getattr(backend, "name", spec))

        if self.accelerator is None:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        acc = self.accelerator
        rank, world = acc.process_index, acc.num_processes
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.output_dir = out

        # prompts: those that fit query_len; the last n_eval_prompts held out for the periodic eval
        tok = start.tokenizer
        rows = [r for r in env_rows(env) if query_fits(tok, r["prompt"], cfg.query_len)]
        n_eval = min(cfg.n_eval_prompts, max(0, len(rows) - world))
        eval_rows, train_rows = rows[len(rows) - n_eval:] if n_eval else [], rows[: len(rows) - n_eval]
        shard = train_rows[rank::world]
        if cfg.rollout_batch_size % world or cfg.step_batch_size % world:
            raise ValueError(f"rollout_batch_size {cfg.rollout_batch_size} and step_batch_size {cfg.step_batch_size} "
                             f"must be multiples of the number of processes ({world})")
        if not shard:
            raise ValueError(f"no prompt of envs['unlabeled'] fits query_len={cfg.query_len} tokens")
        self.per_process = cfg.rollout_batch_size // world
        self.chunk = max(1, min(cfg.rollout_per_device_batch_size, self.per_process))
        # the given env's rows with the reward in force (the stage's reward model): one batched reward call a step
        self.env = AlpacaFarmVectorEnv.from_env(env, shard, self.chunk, reward=spec, reward_kwargs=spec_kwargs,
                                                seed=stable_hash(cfg.seed, rank))
        self.eval_env = (AlpacaFarmVectorEnv.from_env(env, eval_rows, len(eval_rows), reward=spec,
                                                      reward_kwargs=spec_kwargs, seed=cfg.seed) if eval_rows else None)
        self.n_shard = len(shard)

        # what the run's results depend on (stop_after only says where this call stops)
        key = digest({"agent": self.name, "config": {k: v for k, v in asdict(cfg).items() if k != "stop_after"},
                      "reward": [str(spec), spec_kwargs],
                      "policy": getattr(start, "name", ""), "prompts": len(rows), "world": world})[:16]
        summary_path = out / "summary.json"
        if summary_path.is_file():
            done = json.loads(summary_path.read_text())
            if done.get("key") != key:
                raise ValueError(f"{out} holds a {self.name} run with another config, reward, policy or process count "
                                 f"(key {done.get('key')} != {key}); use a fresh output_dir")
            if (out / "model").is_dir():
                self._load_final(out / "model", start)
                self.summary, self.fitted = done, True
                return

        torch.manual_seed(cfg.seed)
        self.tokenizer = start.tokenizer
        self._build(start, backend)  # models, optimizer (prepared), scheduler (registered for checkpointing)
        self.csv = CSVLogger(out / "metrics.csv", ["step", *self.CSV_FIELDS, "seconds"])
        step = self._resume(out / "checkpoint", key)
        if acc.is_main_process:
            self.csv.resume(step)
        acc.wait_for_everyone()
        self.history = [{k: _f(v) for k, v in r.items()} for r in self.csv.read() if int(r["step"]) <= step]
        bar = tqdm(total=cfg.total_steps, initial=step, desc=self.name, unit="step", disable=not (
            self.progress and acc.is_main_process))
        try:
            while step < cfg.total_steps:
                t0 = time.time()
                stats = self._train_step(step)
                step += 1
                stats = {"step": step, **stats, "seconds": time.time() - t0}
                if acc.is_main_process:
                    self.csv.log(stats)
                self.history.append(stats)
                bar.update(1)
                bar.set_postfix(reward=f"{stats.get('reward_mean', float('nan')):.3f}")
                if step % cfg.save_steps == 0 or step == cfg.total_steps:
                    self._checkpoint(out / "checkpoint", step, key)
                if cfg.eval_steps and step % cfg.eval_steps == 0:
                    self._eval(step)
                if cfg.stop_after is not None and step >= cfg.stop_after and step < cfg.total_steps:
                    return  # a deliberate stop (tests of resume): the checkpoint is there, no final model yet
        finally:
            bar.close()
        self._finish(out, step, key)

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _checkpoint(self, folder: Path, step: int, key: str) -> None:
        """``accelerator.save_state`` (the prepared model and optimizer, the registered scheduler, every process's
        RNG; sharded states under FSDP / DeepSpeed) plus ``trainer.json`` (step, run key, the agent's extra state such
        as the KL coefficient), written to ``checkpoint.tmp`` and renamed: a kill leaves the old or the new one."""
        acc = self.accelerator
        tmp = folder.with_name(folder.name + ".tmp")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=False)
        if acc.is_main_process:
            atomic_write_text(tmp / "trainer.json", json.dumps({"key": key, "step": step, **self._extra_state()}))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        acc.wait_for_everyone()

    def _resume(self, folder: Path, key: str) -> int:
        meta = folder / "trainer.json"
        if not meta.is_file():
            return 0
        state = json.loads(meta.read_text())
        if state.get("key") != key:
            raise ValueError(f"{folder} belongs to another run (key {state.get('key')} != {key})")
        self.accelerator.load_state(str(folder))
        self._load_extra_state(state)
        return int(state["step"])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        return None

    def _finish(self, out: Path, step: int, key: str) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        trained = self._final_policy()
        if acc.is_main_process:
            tmp = out / "model.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            trained.model.save_pretrained(tmp)
            trained.tokenizer.save_pretrained(tmp)
            shutil.rmtree(out / "model", ignore_errors=True)
            os.replace(tmp, out / "model")
            last = self.history[-5:]
            self.summary = {"key": key, "steps": step, "reward": self.reward_name, "config": _asdict(self.config),
                            "value_init": getattr(self, "value_init", None),
                            "reward_mean_first": _f(self.history[0].get("reward_mean")) if self.history else None,
                            "reward_mean_last5": (sum(_f(r.get("reward_mean")) for r in last) / len(last)) if last else None}
            atomic_write_text(out / "summary.json", json.dumps(self.summary, indent=1))
            shutil.rmtree(out / "checkpoint", ignore_errors=True)
        acc.wait_for_everyone()
        self._policy = trained
        self.fitted = True

    @abc.abstractmethod
    def _final_policy(self) -> Any:
        """The trained :class:`Policy` (unwrapped from Accelerate, LoRA merged) that ``fit`` saves and returns."""

    def _load_final(self, folder: Path, start: Any) -> None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=start.model.dtype).to(start.device).eval()
        self._policy = type(start)(model, start.tokenizer, name=f"{start.name}:{self.name}")

    # -- eval -------------------------------------------------------------------------------------------------------
    def _eval(self, step: int) -> None:
        """Mean reward on the held-out prompts (sampled at the agent's answer temperature, scored through an env with
        the training reward), a table of sample responses (``eval/step_<k>.md``), and the ``evaluate(agent)`` hook's
        metrics; one row per eval in ``eval.csv``."""
        acc = self.accelerator
        row: dict[str, Any] = {"step": step}
        if self.eval_env is not None and acc.is_main_process:
            pol = self._current_policy()
            n = self.eval_env.num_envs
            prompts, responses, scores = env_episode(
                self.eval_env, list(range(n)),
                lambda ps: [g[0].strip() for g in pol.generate(ps, max_new_tokens=self.config.response_len,
                                                               temperature=self.temperature, top_p=self.top_p,
                                                               batch_size=self.batch_size,
                                                               seed=stable_hash("eval", self.seed, step))])
            row["eval_reward_mean"] = sum(scores) / len(scores)
            folder = self.output_dir / "eval"
            folder.mkdir(exist_ok=True)
            lines = [f"# {self.name} step {step}: mean reward {row['eval_reward_mean']:.4f}", "",
                     "| reward | instruction | response |", "|---|---|---|"]
            insts = [r["instruction"] for r in self.eval_env.rows]
            for s, ins, r in zip(scores, insts, responses):
                lines.append(f"| {s:.3f} | {_cell(ins)} | {_cell(r)} |")
            atomic_write_text(folder / f"step_{step}.md", "\n".join(lines) + "\n")
        if self.evaluate_hook is not None:
            row.update(dict(self.evaluate_hook(self) or {}))
        if acc.is_main_process and len(row) > 1:
            CSVLogger(self.output_dir / "eval.csv", list(row)).log(row)

    @abc.abstractmethod
    def _current_policy(self) -> Any:
        """A :class:`Policy` over the model being trained (the LoRA adapter active), for the eval and the hook."""

    def respond(self, observations):
        if not self.fitted and self.evaluate_hook is None:
            raise RuntimeError(f"{self.name} answers with the policy it trains: call fit() first")
        if not self.fitted:
            saved = self._policy
            self._policy = self._current_policy()
            try:
                return super().respond(observations)
            finally:
                self._policy = saved
        return super().respond(observations)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": _asdict(self.config), "reward": self.reward_name}

    # -- shared helpers for the step -----------------------------------------------------------------------------
    def all_reduce(self, t: Tensor) -> Tensor:
        """Sum over processes (identity on one)."""
        acc = self.accelerator
        return acc.reduce(t.to(acc.device), reduction="sum").to(t.device) if acc.num_processes > 1 else t

    def global_mean(self, value: float) -> float:
        t = torch.tensor([float(value), 1.0])
        t = self.all_reduce(t)
        return float(t[0] / t[1])

    def collect(self, step: int, model: Any, prefix: str = "") -> tuple[list[dict[str, Tensor]], list[float], list[str]]:
        """This process's rollouts of ``step``: chunks of ``rollout_per_device_batch_size`` prompts of its shard,
        sampled at ``temperature`` (top_p 1, top_k 0) from ``model`` (``prefix``, e.g. a reward token, before each
        prompt) and scored through the env (one batched reward call per chunk). Returns the chunks' tensors (plus
        ``scores``), all scores, and the prompts (without the prefix)."""
        cfg, tok = self.config, self.tokenizer
        positions = positions_for_step(self.n_shard, self.per_process, step, cfg.seed, self.name)
        chunks, scores, prompts_out = [], [], []
        eos = _eos_ids(model, tok)
        for c in range(0, len(positions), self.chunk):
            pos = positions[c: c + self.chunk]
            if len(pos) < self.chunk:  # a short last chunk: the env has num_envs sub-envs; extra answers discarded
                pos = pos + positions[: self.chunk - len(pos)]
            holder: dict[str, Any] = {}

            def respond(prompts, _h=holder, _c=c):
                with self.generation_context():
                    _h.update(sample_responses(
                        model, tok, prompts, response_len=cfg.response_len, temperature=cfg.temperature,
                        eos_ids=eos, prefix=prefix,
                        seed=stable_hash(self.name, cfg.seed, step, self.accelerator.process_index, _c)))
                return _h["texts"]

            prompts, _, sc = env_episode(self.env, pos, respond)
            keep = min(self.chunk, len(positions) - c)
            chunk = {k: v[:keep] for k, v in holder.items() if isinstance(v, Tensor)}
            chunk["scores"] = torch.tensor(sc[:keep], dtype=torch.float32, device=chunk["queries"].device)
            chunks.append(chunk)
            scores.extend(sc[:keep])
            prompts_out.extend(prompts[:keep])
        return chunks, scores, prompts_out

    def generation_context(self):
        """Under FSDP, sampling from the unwrapped module needs its full parameters gathered."""
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type == DistributedType.FSDP:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            return FSDP.summon_full_params(self.trained_module, writeback=False, recurse=True)
        return nullcontext()

    def minibatches(self, n: int, size: int, step: int, epoch: int) -> list[list[int]]:
        """Shuffled index groups of ``size`` over ``n`` rollouts (drop_last, as the reference's rollouts loader)."""
        order = epoch_order(n, stable_hash(self.config.seed, self.accelerator.process_index), step * 1000 + epoch,
                            self.name + "-mb")
        return [order[i: i + size] for i in range(0, n - size + 1, size)]

    def accumulate(self, module: Any, groups: Sequence[Sequence[int]], loss_fn: Callable[[Sequence[int]], Tensor]) -> None:
        """One optimizer step over ``groups`` of micro-batches: gradients accumulated (DDP syncs only on the last),
        each loss divided by the number of micro-batches, grad-norm clipped, AdamW step, zero_grad."""
        acc = self.accelerator
        for i, idx in enumerate(groups):
            ctx = acc.no_sync(module) if (acc.num_processes > 1 and i < len(groups) - 1) else nullcontext()
            with ctx:
                loss = loss_fn(idx) / len(groups)
                acc.backward(loss)
        if self.config.max_grad_norm is not None:
            acc.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def make_optimizer(params: Sequence[torch.nn.Parameter], cfg: Any) -> tuple[Any, Any]:
    """AdamW (eps, weight decay of the config) and the linear schedule with ``warmup_steps``, stepped once per RL
    step over ``total_steps`` (reference ``rl_trainer.create_optimizer_and_scheduler``, HF ``linear`` default)."""
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.AdamW(list(params), lr=cfg.learning_rate, eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, cfg.warmup_steps, max(1, cfg.total_steps))
    return opt, sched


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    from ..models.policy import _eos_ids as eos

    return eos(getattr(model, "get_base_model", lambda: model)(), tokenizer)


def _asdict(cfg: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)


def _f(x: Any) -> float:
    return float(x) if x not in (None, "") else math.nan


def _cell(text: str, n: int = 200) -> str:
    t = " ".join(str(text).split()).replace("|", "\\|")
    return (t[:n] + "...") if len(t) > n else t


def frozen_copy(model: Any) -> Any:
    """A frozen, eval-mode deep copy (the reference policy of full mode)."""
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref.eval()
