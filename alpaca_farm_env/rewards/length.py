"""``length``: reward = response length. For ablations (AlpacaFarm reports annotators' length bias) and tests."""
from __future__ import annotations

from .base import BaseReward, register_reward


@register_reward("length")
class LengthReward(BaseReward):
    """Characters (``unit="chars"``) or whitespace words (``unit="words"``), times ``scale``."""

    name = "length"

    def __init__(self, unit: str = "chars", scale: float = 1.0):
        if unit not in ("chars", "words"):
            raise ValueError(f"unit must be 'chars' or 'words', got {unit!r}")
        self.unit, self.scale = unit, scale

    def score(self, prompts, responses, **row):
        if self.unit == "words":
            return [self.scale * len(r.split()) for r in responses]
        return [self.scale * len(r) for r in responses]
