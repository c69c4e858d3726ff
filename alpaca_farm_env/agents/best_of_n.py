"""``best_of_n``: sample n responses at temperature 1.0 and keep the one a reward backend scores highest.

Paper Sec. 4 ("Best-of-n sampling"): n samples from the SFT policy, reranked by the surrogate reward model trained
on simulated preferences (Table 2 uses n = 1024); alpaca_farm ``examples/best_of_n.py::run_best_of_n`` samples
at temperature=1.0 with num_return_sequences=4 and max_new_tokens=300.
Reranking with the evaluator's judge would overstate the gain, so that is refused (judge identities are compared, not
names: ``rewards.annotator_reward.reward_is_evaluator``).
"""
from __future__ import annotations

from typing import Any, Sequence

from ..rewards.annotator_reward import reward_is_evaluator
from .base import register_agent
from .sft import SFTAgent, prompts_of


@register_agent("best_of_n")
class BestOfNAgent(SFTAgent):
    """``n`` samples per prompt at ``temperature`` (1.0), reranked by ``reward`` (a reward spec or backend).

    ``evaluator``: the benchmark's evaluator spec; a ``reward`` that is the evaluator raises ``ValueError``.
    Ties go to the earliest sample. ``last_scores`` holds the scores of the latest call (n per observation).
    """

    name = "best_of_n"

    def __init__(
        self,
        policy: Any = "smollm2-135m",
        *,
        n: int = 4,
        reward: Any = "length",
        reward_kwargs: dict[str, Any] | None = None,
        temperature: float = 1.0,
        evaluator: Any = None,
        **kwargs: Any,
    ):
        super().__init__(policy, temperature=temperature, **kwargs)
        if n < 1:
            raise ValueError(f"best_of_n needs n >= 1, got {n}")
        if reward_is_evaluator(reward, reward_kwargs, evaluator):
            raise ValueError(
                f"best_of_n would rerank with the evaluator itself ({getattr(evaluator, 'name', evaluator)!r}); that "
                "overstates the gain. Pick another reward backend (e.g. --reward length or a trained reward_model)"
            )
        self.n = n
        self.reward_spec = reward
        self.reward_kwargs = dict(reward_kwargs or {})
        self._reward = None
        self.last_scores: list[list[float]] = []

    @property
    def reward(self):
        if self._reward is None:
            from ..rewards import make_reward

            self._reward = make_reward(self.reward_spec, **self.reward_kwargs)
        return self._reward

    @property
    def reward_name(self) -> str:
        return str(getattr(self._reward, "name", None) or getattr(self.reward_spec, "name", self.reward_spec))

    def respond(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        prompts = prompts_of(observations)
        groups = self._sample(prompts, self.n, self.temperature)
        flat_prompts = [p for p, g in zip(prompts, groups) for _ in g]
        flat = [s for g in groups for s in g]
        # per-example columns for the backend (instruction, input, ...), repeated for each sample
        row = {k: [o.get(k, "") for o, g in zip(observations, groups) for _ in g] for k in ("instruction", "input")}
        scores = [float(s) for s in self.reward.score(flat_prompts, flat, **row)]
        out, self.last_scores = [], []
        for i, g in enumerate(groups):
            sc = scores[i * self.n : (i + 1) * self.n]
            self.last_scores.append(sc)
            out.append(g[max(range(len(g)), key=lambda j: (sc[j], -j))])
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "n": self.n, "reward": self.reward_name, "reward_kwargs": self.reward_kwargs}
