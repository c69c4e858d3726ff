"""``expert_iteration``: one round of best-of-n on the unlabeled prompts, then SFT on the winners.

Reference (tatsu-lab/alpaca_farm README "Expert iteration": ``examples/best_of_n.py`` then
``examples/scripts/expiter.sh``; paper Sec. 4 and App. E.2):

1. best-of-16 from SFT10k, reranked by the reward model trained on simulated preferences, on the **unlabeled split**
   (20k instructions): temperature 1.0, top_p 0.9 (``HFDecodingArguments``' default), at most 300 new tokens
   (:class:`~alpaca_farm_env.agents.best_of_n.BestOfNConfig`);
2. ``supervised.py`` on those winners, **initialised from SFT10k** (not from scratch, not from SFT52k), with the SFT
   recipe (``expiter.sh`` repeats ``sft.sh``'s arguments): 3 epochs, lr 2e-5, batch 128, cosine, 3% warm-up
   (:class:`~alpaca_farm_env.agents.sft_loop.SFTConfig`'s defaults), through the shared loop
   :func:`~alpaca_farm_env.agents.sft_loop.train_sft`.

Single round, as the paper's Table 2 entry. The trained policy then answers at the benchmark's sampling settings
(temperature 0.7, top_p 1.0, 300 new tokens: the constructor's, as the ``sft`` agent).

Data reach the agent only through the env: the prompts are the ``unlabeled`` env's ``demonstrations`` (instruction,
input and the AlpacaFarm prompt), never the data dir. The env's own reward (``length``, cheap) is not used: the winners
are scored with the ``reward`` stage, built once (``envs.reward_info.get_reward_backend``) and called on every
batch of n x prompts at once. Scoring through the env would cost one episode per candidate (16 x 20k steps) and bind
the env's reward to the reward model at env creation, before that stage exists.

Output (``output_dir``, resumable): ``best_of_n.jsonl``, one winner per prompt (``instruction``, ``input``,
``output``, ``reward``; with ``config.save_candidates`` also every candidate and its score), appended and fsynced per
batch, so a killed run continues with the prompts not yet in it; ``best_of_n.key`` (what the winners depend on: an
output_dir made with other settings, policy, reward or prompts is refused, as ``train_sft`` does); ``sft/`` (the
shared SFT loop's checkpoints, metrics.csv, model, summary.json).
"""
from __future__ import annotations

import copy
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from ..models import weights_fingerprint
from ..utils import digest
from .base import register_agent
from .best_of_n import BestOfNAgent, BestOfNConfig
from .common import read_jsonl, refuse_evaluator_reward, reward_of_stage
from .sft import SFTAgent
from .sft_loop import SFTConfig, train_sft


@dataclass
class ExpertIterationConfig:
    """One round of expert iteration: best-of-n sampling, then the SFT recipe."""

    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig)  # n=16, temperature 1.0, top_p 0.9, 300 tokens
    sft: SFTConfig = field(default_factory=SFTConfig)  # sft.sh: 3 epochs, lr 2e-5, batch 128, cosine, warm-up 3%
    n_prompts: int | None = None  # the first n of the unlabeled env's prompts; None: all (paper: 20k)
    save_candidates: bool = False  # also keep the n candidates and their scores in best_of_n.jsonl


@register_agent("expert_iteration")
class ExpertIterationAgent(SFTAgent):
    """Expert iteration. ``fit(envs, policy=..., reward=..., output_dir=...)`` trains; ``respond`` samples from the
    trained policy (temperature, top_p, max_new_tokens, batch_size, seed: the constructor's, the benchmark's).

    ``config``: :class:`ExpertIterationConfig`; ``reward=`` / ``reward_kwargs=`` override the ``reward`` stage;
    ``evaluator``: the benchmark's evaluator (a constructor argument or an attribute set before ``fit``), refused as
    the reward (it would overstate the gain).
    """

    name = "expert_iteration"
    trains = True
    ENVS: ClassVar[dict[str, dict[str, Any]]] = {
        "unlabeled": {"id": "AlpacaFarm-v0", "split": "unlabeled", "reward": "length"},
    }
    STAGES: ClassVar[tuple[str, ...]] = ("policy", "reward", "output_dir")

    def __init__(self, policy: Any = None, *, config: ExpertIterationConfig | None = None, reward: Any = None,
                 reward_kwargs: dict[str, Any] | None = None, evaluator: Any = None, **kwargs: Any):
        super().__init__(policy, **kwargs)
        self.config = _as_config(config)
        self.reward_override = (reward, dict(reward_kwargs or {})) if reward is not None else None
        self.evaluator = evaluator
        self.fitted = False
        self.sft_summary: dict[str, Any] | None = None
        self.winners: list[dict[str, Any]] = []
        self._reward_name: str | None = None  # the reward backend's name, known once fit has built it

    @property
    def reward_name(self) -> str | None:
        """A short name of the reward the winners are picked with: the backend's ``name`` after ``fit``; before it,
        the constructor's ``reward=`` (``None`` without one)."""
        if self._reward_name is not None or self.reward_override is None:
            return self._reward_name
        spec = self.reward_override[0]
        return str(getattr(spec, "name", spec))

    # ------------------------------------------------------------------------------------------------ fit ---------
    def fit(self, envs: Mapping[str, Any], *, policy: Any = None, reward: Any = None,
            output_dir: str | os.PathLike | None = None, **_: Any) -> None:
        """Best-of-n on the ``unlabeled`` env's prompts, then SFT of a copy of ``policy`` on the winners (both cached
        in ``output_dir``). Raises ``ValueError`` on a missing stage or a reward that judges like the evaluator."""
        start = self._start_policy(policy, output_dir=output_dir)  # the SFT policy (a Policy, or a spec loaded here)
        if self.reward_override is not None:  # the constructor's reward= wins over the stage
            spec, spec_kwargs = self.reward_override
        else:
            spec, spec_kwargs = reward_of_stage(reward)
        if spec is None:
            raise ValueError("expert_iteration needs the reward stage (the trained reward model) or reward=...")
        refuse_evaluator_reward(self.name, spec, spec_kwargs, self.evaluator)
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        prompts = self._prompts(envs)

        # 1. best-of-n on the unlabeled prompts, cached per batch
        cfg = self.config.best_of_n
        bon = BestOfNAgent(start, n=cfg.n, reward=spec, reward_kwargs=spec_kwargs, temperature=cfg.temperature,
                           top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                           seed=cfg.seed, evaluator=self.evaluator, progress=False)
        _ = bon.reward  # the backend, built now for its name (a reward model loads its weights on the first score)
        self._reward_name = bon.reward_name
        key = digest({"best_of_n": asdict(cfg), "reward": [str(spec), spec_kwargs], "prompts": prompts,
                      "policy": [getattr(start, "name", ""), weights_fingerprint(start.model)]})[:16]
        self.winners = self._best_of_n(bon, prompts, out, key)

        # 2. SFT from the starting policy (a copy: the stage's policy is shared with other methods)
        trained = type(start)(copy.deepcopy(start.model), start.tokenizer, name=f"{start.name}:expert_iteration")
        pairs = [(p["prompt"], w["output"]) for p, w in zip(prompts, self.winners)]
        self.sft_summary = train_sft(trained, pairs, self.config.sft, out / "sft", progress=self.progress)
        self.policy = trained
        self.fitted = True

    def _prompts(self, envs: Mapping[str, Any]) -> list[dict[str, str]]:
        """The first ``config.n_prompts`` of the ``unlabeled`` env's demonstrations (instruction, input, prompt)."""
        if "unlabeled" not in envs:
            raise ValueError(f"expert_iteration needs the 'unlabeled' env ({self.ENVS['unlabeled']}), got {list(envs)}")
        demos = getattr(envs["unlabeled"], "unwrapped", envs["unlabeled"]).demonstrations
        n = len(demos) if self.config.n_prompts is None else min(self.config.n_prompts, len(demos))
        return [{"instruction": d["instruction"], "input": d["input"], "prompt": d["prompt"]} for d in demos[:n]]

    def _best_of_n(self, bon: BestOfNAgent, prompts: list[dict[str, str]], out: Path, key: str) -> list[dict[str, Any]]:
        """The winner row of each prompt, in prompt order: read back from ``best_of_n.jsonl`` where a previous run
        left it, sampled and appended (fsynced per batch) otherwise. Raises ``ValueError`` when the file was made
        under another ``key``."""
        from tqdm.auto import tqdm

        path, key_path = out / "best_of_n.jsonl", out / "best_of_n.key"
        if path.exists() and (not key_path.is_file() or key_path.read_text() != key):
            raise ValueError(f"{path} holds winners sampled with other settings, policy, reward or prompts (key "
                             f"{key_path.read_text() if key_path.is_file() else None} != {key}); use a fresh output_dir")
        key_path.write_text(key)
        rows = read_jsonl(path)
        left = Counter((r["instruction"], r["input"]) for r in rows)
        todo = []
        for i, p in enumerate(prompts):
            k = (p["instruction"], p["input"])
            if left[k] > 0:
                left[k] -= 1
            else:
                todo.append(i)
        bs = max(1, self.config.best_of_n.batch_size)
        bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="best-of-n (expert iteration)",
                   unit="prompt", disable=not self.progress)
        with open(path, "a", encoding="utf-8") as f:
            for s in range(0, len(todo), bs):
                batch = [prompts[i] for i in todo[s : s + bs]]
                winners = bon.respond(batch)
                new = []
                for p, w, cands, scores in zip(batch, winners, bon.last_candidates, bon.last_scores):
                    row = {"instruction": p["instruction"], "input": p["input"], "output": w, "reward": max(scores)}
                    if self.config.save_candidates:
                        row.update(candidates=cands, scores=scores)
                    new.append(row)
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
                f.flush()
                os.fsync(f.fileno())
                rows.extend(new)
                bar.update(len(batch))
        bar.close()
        by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            by_key.setdefault((r["instruction"], r["input"]), []).append(r)
        return [by_key[(p["instruction"], p["input"])].pop(0) for p in prompts]  # in prompt order

    # ------------------------------------------------------------------------------------------------ respond -----
    def respond(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        """One sample of the trained policy per observation; raises ``RuntimeError`` before ``fit``."""
        if not self.fitted:
            raise RuntimeError("expert_iteration answers with the policy it trains: call fit() first")
        return super().respond(observations)

    def describe(self) -> dict[str, Any]:
        """The settings that determine the outputs, with ``"reward"``: the reward the winners are picked with."""
        return {**super().describe(), "n": self.config.best_of_n.n, "sft": asdict(self.config.sft),
                "reward": self.reward_name}


def _as_config(config: Any) -> ExpertIterationConfig:
    """The config as given, or built from a mapping (a preset's YAML): ``best_of_n`` and ``sft`` nest their own."""
    if config is None or isinstance(config, ExpertIterationConfig):
        return config or ExpertIterationConfig()
    fields = dict(config)
    bon, sft = fields.pop("best_of_n", {}), fields.pop("sft", {})
    return ExpertIterationConfig(
        best_of_n=bon if isinstance(bon, BestOfNConfig) else BestOfNConfig(**dict(bon)),
        sft=sft if isinstance(sft, SFTConfig) else SFTConfig(**dict(sft)), **fields)
