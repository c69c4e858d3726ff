"""``best_of_n``: sample n responses at temperature 1.0 and keep the one the reward model scores highest.

Reference (tatsu-lab/alpaca_farm ``examples/best_of_n.py``, ``run_best_of_n`` = ``run_decode`` + ``run_rerank``):
for each instruction, ``n`` samples from SFT10k at temperature 1.0, max 300 new tokens, each scored by the surrogate
reward model trained on simulated preferences (``prompt + output``, no EOS), and the argmax returned. The README runs
``--num_return_sequences 16``; the paper finds n around 16 best (App. E.2; Table 4's "Best-of-16") and sweeps to
n = 1024 for over-optimisation (Fig. 5). ``run_decode`` goes through ``src/alpaca_farm/inference/decode.py``, whose
``HFDecodingArguments`` default to ``top_p=0.9`` (top_k 0) and ``best_of_n.py`` does not override it: hence
``top_p=0.9`` here, not the 1.0 of PPO rollouts. The benchmark's ``generation`` settings (its evaluation decoding)
reach this agent only for ``max_new_tokens``, ``batch_size`` and ``seed`` (``GENERATION_KEYS``): its n, temperature
and top_p stay :class:`BestOfNConfig`'s unless its own preset entry sets them.

Pipeline stages (``STAGES``): ``policy`` (the SFT policy to sample from) and ``reward`` (the trained reward model's
spec, ``{"reward": "reward_model", "reward_kwargs": {...}}``), both given to ``fit``. ``reward=`` in the constructor
overrides the stage (e.g. ``"length"``, a cheap proxy for the annotators' length bias, as the tiny preset uses). The
reward backend is built as the envs build it (``envs.reward_info.get_reward_backend``).

Reranking with the evaluator's judge would overstate the gain, so that is refused (judge identities are compared, not
names: ``envs.reward_info.reward_judges_like``), for the constructor's reward and the stage's alike. ``evaluator`` is
an attribute the benchmark may assign after construction: the check runs when a reward is set, in ``fit`` and
before every reranking, so a late evaluator is honoured too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from ..envs.reward_info import get_reward_backend
from .base import register_agent
from .common import refuse_evaluator_reward, reward_of_stage
from .sft import SFTAgent, prompts_of


@dataclass
class BestOfNConfig:
    """Sampling of best-of-n: tatsu-lab/alpaca_farm ``examples/best_of_n.py`` (``run_decode``'s defaults and the
    README's command) and the paper (Sec. 4, App. E.2)."""

    n: int = 16  # README --num_return_sequences 16; paper App. E.2
    temperature: float = 1.0  # run_decode's default; paper Sec. 4
    top_p: float = 0.9  # HFDecodingArguments default, not overridden by best_of_n.py (PPO rollouts use 1.0)
    max_new_tokens: int = 300  # run_decode's default
    batch_size: int = 8  # prompts per generate call
    seed: int = 0


@register_agent("best_of_n")
class BestOfNAgent(SFTAgent):
    """``n`` samples per prompt at ``temperature``, reranked by the reward (the ``reward`` stage, unless ``reward=``
    overrides it).

    ``evaluator``: the benchmark's evaluator spec (a constructor argument or an attribute set before ``fit``); a
    reward that judges like it raises ``ValueError``. Ties go to the earliest sample. ``last_candidates`` /
    ``last_scores`` hold the samples and their scores of the latest ``respond`` (n per observation).
    """

    name = "best_of_n"
    ENVS: ClassVar[dict[str, dict[str, Any]]] = {}
    STAGES: ClassVar[tuple[str, ...]] = ("policy", "reward")
    # the benchmark's evaluation decoding this agent takes: the answer budget and the batching/seed; n, temperature
    # and top_p are its candidates' sampling (BestOfNConfig, or its own preset entry), never the benchmark's
    GENERATION_KEYS: ClassVar[tuple[str, ...]] = ("max_new_tokens", "batch_size", "seed")

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
        self._checked: tuple[Any, Any] | None = None  # (evaluator, reward spec) the guard last passed
        if reward is not None:
            self._set_reward(reward, reward_kwargs)
        self.last_candidates: list[list[str]] = []
        self.last_scores: list[list[float]] = []

    def _set_reward(self, spec: Any, kwargs: dict[str, Any] | None) -> None:
        self.reward_spec, self.reward_kwargs, self._reward, self._checked = spec, dict(kwargs or {}), None, None
        self._refuse_evaluator()

    def _refuse_evaluator(self) -> None:
        """Raise ``ValueError`` when the reward judges like ``self.evaluator``; checked again whenever either of the
        two has been replaced since the last check (the benchmark assigns ``evaluator`` after construction)."""
        if self._checked is not None and self._checked[0] is self.evaluator and self._checked[1] is self.reward_spec:
            return
        refuse_evaluator_reward(self.name, self.reward_spec, self.reward_kwargs, self.evaluator)
        self._checked = (self.evaluator, self.reward_spec)

    def fit(self, envs: Mapping[str, Any] | None = None, *, policy: Any = None, reward: Any = None, **_: Any) -> None:
        """Take the starting ``policy`` and the ``reward`` stage (ignored when the constructor's ``reward=`` overrides
        it). Nothing is trained. Other keywords (stages this agent does not declare) are ignored. Raises
        ``ValueError`` when the reward judges like the evaluator."""
        if policy is not None:
            self.policy = policy
        if reward is not None and not self.reward_override:
            self._set_reward(*reward_of_stage(reward))
        self._refuse_evaluator()

    @property
    def reward(self) -> Any:
        """The reward backend (built on first use); raises ``RuntimeError`` when there is none and ``ValueError`` when
        it judges like the evaluator."""
        if self.reward_spec is None:
            raise RuntimeError("best_of_n has no reward to rerank with: fit(envs, reward=<the trained reward model's "
                               "spec>) or construct it with reward=... (e.g. 'length')")
        self._refuse_evaluator()
        if self._reward is None:
            self._reward = get_reward_backend(self.reward_spec, self.reward_kwargs)
        return self._reward

    @property
    def reward_name(self) -> str | None:
        """A short name of the reward it reranks with (the backend's ``name`` once built); ``None`` before it has
        one."""
        if self.reward_spec is None:
            return None
        return str(getattr(self._reward, "name", None) or getattr(self.reward_spec, "name", self.reward_spec))

    def respond(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        """The highest-scoring of ``n`` samples for each observation."""
        reward = self.reward  # fail before sampling when there is none, or when it judges like the evaluator
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
        """The settings that determine the outputs, with ``"reward"``: the reward it reranks with."""
        return {**super().describe(), "n": self.n, "reward": self.reward_name, "reward_kwargs": self.reward_kwargs}
