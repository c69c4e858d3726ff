"""``best_of_n``: sample n responses at temperature 1.0 and keep the one the reward model scores highest.

Reference (tatsu-lab/alpaca_farm ``examples/best_of_n.py``, ``run_best_of_n`` = ``run_decode`` + ``run_rerank``;
reference notes Sec. 5.2): for each instruction, ``n`` samples from SFT10k at temperature 1.0, max 300 new tokens,
each scored by the surrogate reward model trained on simulated preferences (``prompt + output``, no EOS), and the
argmax returned. The README runs ``--num_return_sequences 16``; the paper finds n around 16 best (App. E.2; Table 4's
"Best-of-16") and sweeps to n = 1024 for over-optimisation (Fig. 5). ``run_decode`` goes through the HF decode helper,
whose ``HFDecodingArguments`` default to ``top_p=0.9`` (top_k 0) and ``best_of_n.py`` does not override it: hence
``top_p=0.9`` here, not the 1.0 of PPO rollouts.

Pipeline stages (``STAGES``): ``policy`` (the SFT policy to sample from) and ``reward`` (the trained reward model's
spec, ``{"reward": "reward_model", "reward_kwargs": {...}}``), both given to ``fit``. ``reward=`` in the constructor
overrides the stage (e.g. ``"length"``, a cheap proxy for the annotators' length bias, as the tiny preset uses).
Reranking with the evaluator's judge would overstate the gain, so that is refused (judge identities are compared, not
names: ``rewards.annotator_reward.reward_is_evaluator``), for the constructor's reward and the stage's alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from ..rewards.annotator_reward import reward_is_evaluator
from .base import register_agent
from .common import reward_of_stage  # noqa: F401  (re-exported: callers import it from here)
from .sft import SFTAgent, prompts_of


@dataclass
class BestOfNConfig:
    """Sampling of best-of-n (reference notes Sec. 5.2 / 8.8-8.9)."""

    n: int = 16  # README --num_return_sequences 16; paper App. E.2
    temperature: float = 1.0  # best_of_n.py; paper Sec. 4
    top_p: float = 0.9  # HFDecodingArguments default, not overridden by best_of_n.py (PPO rollouts use 1.0)
    max_new_tokens: int = 300
    batch_size: int = 8  # prompts per generate call
    seed: int = 0


@register_agent("best_of_n")
class BestOfNAgent(SFTAgent):
    """``n`` samples per prompt at ``temperature``, reranked by the reward (the ``reward`` stage, unless ``reward=``
    overrides it).

    ``evaluator``: the benchmark's evaluator spec; a reward that is the evaluator raises ``ValueError``.
    Ties go to the earliest sample. ``last_candidates`` / ``last_scores`` hold the samples and their scores of the
    latest ``respond`` (n per observation).
    """

    name = "best_of_n"
    ENVS: ClassVar[dict[str, dict[str, Any]]] = {}
    STAGES: ClassVar[tuple[str, ...]] = ("policy", "reward")

    def __init__(
        self,
        policy: Any = "smollm2-135m",
        *,
        n: int = BestOfNConfig.n,
        reward: Any = None,
        reward_kwargs: dict[str, Any] | None = None,
        temperature: float = BestOfNConfig.temperature,
        top_p: float = BestOfNConfig.top_p,
        max_new_tokens: int = BestOfNConfig.max_new_tokens,
        evaluator: Any = None,
        **kwargs: Any,
    ):
        super().__init__(policy, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, **kwargs)
        if n < 1:
            raise ValueError(f"best_of_n needs n >= 1, got {n}")
        self.n = n
        self.evaluator = evaluator
        self.reward_override = reward is not None
        self.reward_spec: Any = None
        self.reward_kwargs: dict[str, Any] = {}
        self._reward = None
        if reward is not None:
            self._set_reward(reward, reward_kwargs)
        self.last_candidates: list[list[str]] = []
        self.last_scores: list[list[float]] = []

    def _set_reward(self, spec: Any, kwargs: dict[str, Any] | None) -> None:
        if reward_is_evaluator(spec, kwargs, self.evaluator):
            raise ValueError(
                f"best_of_n would rerank with the evaluator itself ({getattr(self.evaluator, 'name', self.evaluator)!r});"
                " that overstates the gain. Pick another reward backend (e.g. --reward length or a trained reward_model)"
            )
        self.reward_spec, self.reward_kwargs, self._reward = spec, dict(kwargs or {}), None

    def fit(self, envs: Mapping[str, Any] | None = None, *, policy: Any = None, reward: Any = None, **_: Any) -> None:
        """Take the starting ``policy`` and the ``reward`` stage (ignored when the constructor's ``reward=`` overrides
        it). Nothing is trained. Other keywords (stages this agent does not declare) are ignored."""
        if policy is not None:
            self._policy = policy
        if reward is not None and not self.reward_override:
            self._set_reward(*reward_of_stage(reward))

    @property
    def reward(self):
        if self.reward_spec is None:
            raise RuntimeError("best_of_n has no reward to rerank with: fit(envs, reward=<the trained reward model's "
                               "spec>) or construct it with reward=... (e.g. 'length')")
        if self._reward is None:
            from ..rewards import make_reward

            self._reward = make_reward(self.reward_spec, **self.reward_kwargs)
        return self._reward

    @property
    def reward_name(self) -> str:
        return str(getattr(self._reward, "name", None) or getattr(self.reward_spec, "name", self.reward_spec))

    def respond(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        reward = self.reward  # fail before sampling when there is none
        prompts = prompts_of(observations)
        groups = self._sample(prompts, self.n, self.temperature)
        flat_prompts = [p for p, g in zip(prompts, groups) for _ in g]
        flat = [s for g in groups for s in g]
        # per-example columns for the backend (instruction, input, ...), repeated for each sample
        row = {k: [o.get(k, "") for o, g in zip(observations, groups) for _ in g] for k in ("instruction", "input")}
        scores = [float(s) for s in reward.score(flat_prompts, flat, **row)]
        out, self.last_scores, self.last_candidates = [], [], []
        for i, g in enumerate(groups):
            sc = scores[i * self.n : (i + 1) * self.n]
            self.last_scores.append(sc)
            self.last_candidates.append(list(g))
            out.append(g[max(range(len(g)), key=lambda j: (sc[j], -j))])
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "n": self.n, "reward": self.reward_name, "reward_kwargs": self.reward_kwargs}
