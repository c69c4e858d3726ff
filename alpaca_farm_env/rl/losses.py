"""The tensor maths of PPO and Quark, as pure functions of tensors: whitening, reward shaping, generalised advantage
estimation, the clipped PPO policy and value losses, Quark's per-token loss, and the KL controllers.

Reference (tatsu-lab/alpaca_farm): ``src/alpaca_farm/torch_ops.py`` (``whiten``), ``src/alpaca_farm/rl/
ppo_trainer.py`` (``_shape_reward``, ``_estimate_advantage``, ``compute_loss``), ``src/alpaca_farm/rl/
quark_trainer.py`` (``compute_loss``), ``src/alpaca_farm/rl/kl_controller.py``. Nothing here samples, reads an env or
touches an optimizer: every function maps tensors to tensors (and a dict of detached statistics).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
AllReduce = Callable[[Tensor], Tensor]  # sums a tensor over processes (identity on one process)

__all__ = ["AdaptiveKLController", "FixedKLController", "gae", "make_kl_controller", "ppo_policy_loss",
           "ppo_value_loss", "quark_loss", "shape_rewards", "whiten"]


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
    """The mean of ``x`` over every entry, or over the entries where ``mask`` is true."""
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
    """Quark's per-token loss (reference ``rl/quark_trainer.py`` ``compute_loss``):
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
        """Nothing: the coefficient stays as it is."""
        return None


class AdaptiveKLController:
    """Reference ``rl/kl_controller.py``: ``value *= 1 + k_beta * clip(current_kl / target_kl - 1, -0.2, 0.2)`` after
    each step (``current_kl``: the mean over sequences of the summed per-token KL, averaged over processes)."""

    def __init__(self, kl_coef: float, target_kl: float = 6.0, k_beta: float = 0.1):
        self.value, self.target_kl, self.k_beta = float(kl_coef), float(target_kl), float(k_beta)

    def step(self, current_kl: float) -> None:
        """Move ``value`` towards the coefficient that keeps the KL at ``target_kl``; returns nothing."""
        err = min(max(current_kl / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + self.k_beta * err


def make_kl_controller(kl_coef: float, adaptive: bool = False, target_kl: float = 6.0,
                       k_beta: float = 0.1) -> FixedKLController | AdaptiveKLController:
    """The KL controller of a config: returns an :class:`AdaptiveKLController` when ``adaptive``, else a
    :class:`FixedKLController`; either holds the coefficient in ``.value`` and updates it in ``.step(current_kl)``."""
    return AdaptiveKLController(kl_coef, target_kl, k_beta) if adaptive else FixedKLController(kl_coef)
