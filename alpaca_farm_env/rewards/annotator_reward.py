"""``annotator``: a pairwise annotator turned into a reward against the env's reference output.

Following AlpacaFarm's evaluation protocol the reference (Davinci003) is output_1 and the response is output_2, so
the reward is P(response preferred) = ``preference - 1`` (a draw is 0.5), or the annotator's probability where it
has one. Unlabeled pairs (an unparseable completion) get 0.5 and ``info["labeled"] = False``.
"""
from __future__ import annotations

from typing import Any

from .base import BaseReward, register_reward


@register_reward("annotator")
class AnnotatorReward(BaseReward):
    name = "annotator"

    def __init__(self, annotator: Any = "noisy_pooled", seed: int = 0, use_probability: bool = False, **annotator_kwargs: Any):
        from ..annotators import make_annotator

        self.annotator = make_annotator(annotator, **annotator_kwargs)
        self.name = f"annotator:{getattr(self.annotator, 'name', annotator)}"
        self.seed = seed
        self.use_probability = use_probability

    @classmethod
    def check_kwargs(cls, annotator: Any = "noisy_pooled", **_: Any) -> None:
        """Resolve the annotator name without building the annotator (see ``check_reward``)."""
        from ..annotators import ANNOTATORS
        from ..registry import UnknownSpecError

        try:
            ANNOTATORS.resolve(annotator)
        except UnknownSpecError as e:
            raise UnknownSpecError(f"reward_kwargs['annotator']: {e}") from None

    def score_with_info(self, prompts, responses, **row):
        n = len(responses)
        if "reference_output" not in row:
            raise ValueError("the annotator reward needs row['reference_output'] (the env passes it)")
        instructions = row.get("instruction") or list(prompts)
        inputs = row.get("input") or [""] * n
        anns = self.annotator.compare(instructions, inputs, row["reference_output"], list(responses), seed=self.seed)
        scores, infos = [], []
        for a in anns:
            if self.use_probability and a.probability is not None:
                s = float(a.probability)
            elif a.preference is None:
                s = 0.5
            else:
                s = float(a.preference) - 1.0
            scores.append(s)
            infos.append({"score": s, "labeled": a.preference is not None, **a.to_dict()})
        return scores, infos

    def score(self, prompts, responses, **row):
        return self.score_with_info(prompts, responses, **row)[0]
