"""``sft``: the supervised policy as it is (the paper's SFT baseline, Table 2).

AlpacaFarm samples every method's outputs at temperature 0.7 with at most 300 new tokens (paper Sec. 4 / App. D;
alpaca_farm ``examples/*`` decoding defaults), which are this agent's defaults; the tiny preset shortens them.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..data import format_prompt
from ..utils import stable_hash
from .base import register_agent


def prompts_of(observations: Sequence[dict[str, Any]]) -> list[str]:
    """The prompt of each observation (``prompt``, else the AlpacaFarm template over ``instruction``/``input``)."""
    return [o.get("prompt") or format_prompt(o["instruction"], o.get("input", "")) for o in observations]


@register_agent("sft")
class SFTAgent:
    """Sample one response per observation from ``policy`` (a ``Policy`` or a ``load_policy`` spec, loaded lazily).

    Sampling is seeded from ``(seed, the batch's prompts)``, so the same observations give the same responses however
    a caller splits them into calls of ``batch_size`` (the benchmark resumes per batch).
    """

    name = "sft"
    trains = False

    def __init__(
        self,
        policy: Any = "smollm2-135m",
        *,
        max_new_tokens: int = 300,
        temperature: float = 0.7,
        top_p: float = 1.0,
        batch_size: int = 8,
        seed: int = 0,
        progress: bool = False,
    ):
        self._policy = policy
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.batch_size, self.seed, self.progress = batch_size, seed, progress
        self.n_generate_calls = 0  # how many times the policy was sampled (the benchmark's resume test reads it)

    @property
    def policy(self):
        if isinstance(self._policy, str) or not hasattr(self._policy, "generate"):
            from ..models import load_policy

            self._policy = load_policy(self._policy)
        return self._policy

    def fit(self, env: Any = None, **kwargs: Any) -> None:
        """Nothing to train: the SFT policy is used as it is."""
        return None

    def _sample(self, prompts: list[str], n: int, temperature: float) -> list[list[str]]:
        self.n_generate_calls += 1
        out = self.policy.generate(
            prompts,
            max_new_tokens=self.max_new_tokens,
            temperature=temperature,
            top_p=self.top_p,
            do_sample=temperature > 0,
            num_return_sequences=n,
            batch_size=self.batch_size,
            seed=stable_hash(self.name, self.seed, *prompts),
            progress=self.progress,
        )
        return [[s.strip() for s in group] for group in out]

    def respond(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        return [g[0] for g in self._sample(prompts_of(observations), 1, self.temperature)]

    def describe(self) -> dict[str, Any]:
        """The settings that determine the outputs (the benchmark's cache key and table label)."""
        return {"agent": self.name, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed}
