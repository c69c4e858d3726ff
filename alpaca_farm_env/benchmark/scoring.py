"""The one evaluation path: eval rows -> an eval-split ``AlpacaFarm-v0`` vector env whose reward is the evaluator ->
``step(responses)`` -> the evaluator's annotation of each response against Davinci003 -> ``metrics.win_rate``.

The env's reward is P(the response beats Davinci003) (the ``annotator`` reward: ``preference - 1``), noise-free and
keyed on the instruction (alpaca_eval's semantics, never per episode), so a method's mean return over the labelled
rows *is* its win-rate / 100; :meth:`EvalEnv.judge` checks that the two agree for every row it returns.

Used by the benchmark runner (every method's reported win-rate, ``runner.py``), by the agents' training-time eval
hook (:func:`win_rate_hook`) and by the over-optimization experiment (:class:`EvalScorer`, which also measures a
proxy reward through an env over the same rows).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import AgentError, TrainingOnTestSetWarning
from .config import BenchmarkConfig
from .pipeline import make_env

REFERENCE_NAME = "Davinci003"


@dataclass(frozen=True)
class EvalSplit:
    """The benchmark's eval split and evaluator: ``reference`` (the Davinci003 reference set), ``data_dir``,
    ``evaluator`` (the keyword arguments of the eval env's ``annotator`` reward), and ``split``: ``"eval"``, or
    ``"val"`` for the checkpoint selection (``selection.py``: the val split's outputs are the references)."""

    reference: str
    data_dir: Any
    evaluator: dict[str, Any] = field(default_factory=dict)
    split: str = "eval"

    @classmethod
    def from_config(cls, cfg: BenchmarkConfig, evaluator_kwargs: dict[str, Any], data_dir: Any) -> "EvalSplit":
        """The split of ``cfg``: its reference, and its evaluator (``cfg.annotator`` with ``evaluator_kwargs``, seed
        ``cfg.annotator_seed``, one noise draw per instruction)."""
        return cls(cfg.reference, data_dir, {"annotator": cfg.annotator, **evaluator_kwargs,
                                             "seed": cfg.annotator_seed})

    def env(self, rows: Sequence[dict[str, Any]], reward: Any = None,
            reward_kwargs: dict[str, Any] | None = None) -> "EvalEnv":
        """An :class:`EvalEnv` over ``rows`` (eval rows with ``row_index``) whose reward is ``reward`` (default:
        the evaluator)."""
        return EvalEnv(self, rows, reward, reward_kwargs)


class EvalEnv:
    """``gym.make_vec("AlpacaFarm-v0", split="eval")`` (or the split's ``split``) over fixed rows, one sub-env per row,
    so one ``step`` is one batched reward call over all of them. The reward is the evaluator unless another is given
    (a proxy)."""

    def __init__(self, split: EvalSplit, rows: Sequence[dict[str, Any]], reward: Any = None,
                 reward_kwargs: dict[str, Any] | None = None):
        self.rows = list(rows)
        self.is_evaluator = reward is None
        spec = {"id": "AlpacaFarm-v0", "split": split.split, "reference": split.reference, "shuffle": False,
                "seed_mode": "instruction" if reward is None else "episode",  # the evaluator: alpaca_eval's draws
                "indices": [r["row_index"] for r in self.rows],
                "reward": "annotator" if reward is None else reward,
                "reward_kwargs": split.evaluator if reward is None else dict(reward_kwargs or {})}
        with warnings.catch_warnings():  # evaluating on the eval split, not training on it
            warnings.simplefilter("ignore", TrainingOnTestSetWarning)
            self.env = make_env(spec, split.data_dir, num_envs=len(self.rows))

    def reset(self) -> list[dict[str, str]]:
        """Start one episode per row, in row order; returns their observations (``instruction, input, prompt``)."""
        obs, _ = self.env.reset(seed=0, options={"index": list(range(len(self.rows)))})
        return [{k: obs[k][j] for k in ("instruction", "input", "prompt")} for j in range(len(self.rows))]

    def step(self, responses: Sequence[str]) -> tuple[list[float], dict[str, Any]]:
        """Answer the current episodes (one response per row, in order); returns the rewards and the finished
        episodes' infos (``final_info``: Gymnasium's batched dict)."""
        _, rewards, _, _, infos = self.env.step([str(r) for r in responses])
        return [float(r) for r in rewards], infos.get("final_info", {})

    def judge(self, responses: Sequence[str]) -> list[dict[str, Any]]:
        """Step the evaluator env with ``responses`` (after :meth:`reset`); returns one annotation per row:
        ``preference`` (1: Davinci003 wins, 2: the response wins; None when unlabelled), ``probability``,
        ``annotator``, ``raw_completion`` (None) and, where the judge hid a banked answer, ``bank_hidden``. Raises
        ``RuntimeError`` when a reward is not the annotation's P(response wins) (the env is not the evaluator's)."""
        if not self.is_evaluator:
            raise ValueError("judge() needs the evaluator env (EvalSplit.env(rows) without a reward)")
        rewards, final = self.step(responses)
        extra = final.get("extra", {})
        hidden = extra.get("_bank_hidden") if isinstance(extra, dict) and "bank_hidden" in extra else None
        out = []
        for j, r in enumerate(rewards):
            p, q = final["preference"][j], final["probability"][j]
            a = {"preference": None if p is None else float(p), "probability": None if q is None else float(q),
                 "annotator": str(final["annotator"][j]), "raw_completion": None}
            if hidden is not None and hidden[j]:
                a["bank_hidden"] = bool(extra["bank_hidden"][j])
            labelled = a["preference"] is not None and not math.isnan(a["preference"])
            if labelled and not math.isclose(r, a["preference"] - 1.0, abs_tol=1e-9):
                raise RuntimeError(f"the eval env's reward {r} is not P(response wins) = {a['preference'] - 1.0} of "
                                   f"its annotation (eval row {self.rows[j].get('row_index')}): the env's reward is "
                                   "not the evaluator")
            out.append(a)
        return out

    def close(self) -> None:
        self.env.close()


class EvalScorer:
    """Win-rate (and a proxy reward) of responses to fixed eval rows, each through an :class:`EvalEnv`, built on
    first use and reused: the evaluator's, and the proxy's (``reward``, e.g. the trained reward model)."""

    def __init__(self, split: EvalSplit, rows: list[dict[str, Any]], reward: Any = "length",
                 reward_kwargs: dict[str, Any] | None = None):
        self.split, self.rows = split, rows
        self.reward, self.reward_kwargs = reward, dict(reward_kwargs or {})
        self._envs: dict[str, EvalEnv] = {}

    def _env(self, which: str) -> EvalEnv:
        if which not in self._envs:
            self._envs[which] = (self.split.env(self.rows) if which == "evaluator"
                                 else self.split.env(self.rows, self.reward, self.reward_kwargs))
        return self._envs[which]

    def observations(self) -> list[dict[str, str]]:
        """The rows' observations (``instruction, input, prompt``), as the env presents them."""
        return self._env("evaluator").reset()

    def proxy(self, responses: Sequence[str]) -> list[float]:
        """The proxy reward of each response (the proxy env's return)."""
        env = self._env("proxy")
        env.reset()
        return env.step(responses)[0]

    def annotations(self, responses: Sequence[str]) -> list[dict[str, Any]]:
        """The evaluator's annotation of each response against its row's Davinci003 reference (:meth:`EvalEnv.judge`)."""
        env = self._env("evaluator")
        env.reset()
        return env.judge(responses)

    def win_rate(self, responses: Sequence[str]) -> dict[str, Any]:
        """``metrics.win_rate`` of the responses against the rows' Davinci003 references, judged by the evaluator."""
        from ..metrics import win_rate

        return win_rate([a["preference"] for a in self.annotations(responses)], list(responses))

    def point(self, method: str, x: float, responses: Sequence[str], proxy: Sequence[float] | None = None
              ) -> dict[str, Any]:
        """One over-optimization point: ``method``, ``x``, the mean proxy reward, the win-rate and its SE, ``n`` and
        the responses' mean length."""
        proxy = list(proxy) if proxy is not None else self.proxy(responses)
        wr = self.win_rate(responses)
        return {"method": method, "x": x, "proxy_reward": sum(proxy) / len(proxy), "win_rate": wr["win_rate"],
                "standard_error": wr["standard_error"], "n": wr["n_total"], "avg_length": wr["avg_length"]}


def win_rate_hook(scorer: EvalScorer):
    """An agent's ``eval_hook``: the agent's current policy answers the scorer's rows, the evaluator judges them;
    returns ``eval_win_rate``, ``eval_win_rate_se`` and ``eval_n`` (a small subset: a trend to watch in the agent's
    ``eval.csv``, not the benchmark's number)."""

    def hook(agent: Any) -> dict[str, Any]:
        wr = scorer.win_rate(agent.respond(scorer.observations()))
        return {"eval_win_rate": wr["win_rate"], "eval_win_rate_se": wr["standard_error"], "eval_n": wr["n_total"]}

    return hook


def check_responses(texts: Any, method: str, rows: list[dict[str, Any]], split: str = "eval") -> list[str]:
    """What the env's ``step`` demands of an action, checked before anything is cached or scored: a list (or tuple)
    of strings, one per observation (of ``split``'s rows). Raises :class:`AgentError` naming the agent and the first
    bad row."""
    if not isinstance(texts, (list, tuple)):
        raise AgentError(f"agent {method!r}: respond() returned {type(texts).__name__}, not a list of "
                         f"{len(rows)} strings")
    if len(texts) != len(rows):
        raise AgentError(f"agent {method!r}: respond() returned {len(texts)} responses for {len(rows)} observations")
    for t, r in zip(texts, rows):
        if not isinstance(t, str):
            raise AgentError(f"agent {method!r}: respond() returned {t!r} ({type(t).__name__}), not a string, for "
                             f"{split} row {r.get('row_index')} ({r['instruction'][:60]!r})")
    return list(texts)
