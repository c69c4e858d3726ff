"""Scoring responses to a fixed set of eval rows through eval-split envs: the proxy reward (the mean return of an
``AlpacaFarm-v0`` vector env whose reward is, e.g., the reward model) and the win-rate against Davinci003 (one whose
reward is the evaluator: noise-free, instruction-keyed). Used by the over-optimization experiment and by the RL
agents' periodic eval in the benchmark."""
from __future__ import annotations

import warnings
from typing import Any, Sequence

from ..errors import TrainingOnTestSetWarning
from .config import BenchmarkConfig
from .pipeline import make_env


class EvalScorer:
    """Proxy reward and win-rate of a list of responses to the eval rows, each through an eval-split vector env."""

    def __init__(self, cfg: BenchmarkConfig, rows: list[dict[str, Any]], evaluator_kwargs: dict[str, Any],
                 data_dir: Any, reward: Any = "length", reward_kwargs: dict[str, Any] | None = None):
        self.rows, self.data_dir, self.cfg = rows, data_dir, cfg
        self.reward, self.reward_kwargs = reward, dict(reward_kwargs or {})
        self.eval_reward = {"annotator": cfg.annotator, **evaluator_kwargs, "seed": cfg.annotator_seed,
                            "per_episode": False}
        self._envs: dict[str, Any] = {}

    def _env(self, which: str) -> Any:
        if which not in self._envs:
            reward, kwargs = (self.reward, self.reward_kwargs) if which == "proxy" else ("annotator", self.eval_reward)
            with warnings.catch_warnings():  # measuring, not training on, the eval split
                warnings.simplefilter("ignore", TrainingOnTestSetWarning)
                self._envs[which] = make_env({"id": "AlpacaFarm-v0", "split": "eval", "reference": self.cfg.reference,
                                              "shuffle": False, "indices": [r["row_index"] for r in self.rows],
                                              "reward": reward, "reward_kwargs": kwargs},
                                             self.data_dir, num_envs=len(self.rows))
        return self._envs[which]

    def observations(self) -> list[dict[str, str]]:
        obs, _ = self._env("proxy").reset(options={"index": list(range(len(self.rows)))})
        return [{k: obs[k][j] for k in ("instruction", "input", "prompt")} for j in range(len(self.rows))]

    def _step(self, which: str, responses: Sequence[str]) -> tuple[list[float], dict[str, Any]]:
        env = self._env(which)
        env.reset(options={"index": list(range(len(self.rows)))})
        _, rewards, _, _, infos = env.step([str(r) for r in responses])
        return [float(r) for r in rewards], infos.get("final_info", {})

    def proxy(self, responses: Sequence[str]) -> list[float]:
        return self._step("proxy", responses)[0]

    def win_rate(self, responses: Sequence[str]) -> dict[str, Any]:
        """``metrics.win_rate`` of the responses against the rows' Davinci003 references, judged by the evaluator."""
        from ..metrics import win_rate

        _, final = self._step("evaluator", responses)
        return win_rate([None if p is None else float(p) for p in final["preference"]], list(responses))

    def point(self, method: str, x: float, responses: Sequence[str], proxy: Sequence[float] | None = None
              ) -> dict[str, Any]:
        proxy = list(proxy) if proxy is not None else self.proxy(responses)
        wr = self.win_rate(responses)
        return {"method": method, "x": x, "proxy_reward": sum(proxy) / len(proxy), "win_rate": wr["win_rate"],
                "standard_error": wr["standard_error"], "n": wr["n_total"], "avg_length": wr["avg_length"]}


def win_rate_hook(scorer: EvalScorer):
    """An RL agent's ``evaluate`` hook: the agent's current policy answers the scorer's rows, the evaluator judges
    them; logged in the agent's ``eval.csv`` (a small subset: a trend to watch, not the benchmark's number)."""

    def hook(agent: Any) -> dict[str, Any]:
        wr = scorer.win_rate(agent.respond(scorer.observations()))
        return {"eval_win_rate": wr["win_rate"], "eval_win_rate_se": wr["standard_error"], "eval_n": wr["n_total"]}

    return hook
