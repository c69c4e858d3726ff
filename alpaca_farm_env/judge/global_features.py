"""The global head's features: ``compact`` (the default) or ``full`` (``features.build_features``).

``compact``: the 45 hand features and the MiniLM relevance of the output's opening, alone and scaled by its length.
On instructions the judge never saw it generalises where the full vector's 1,152 embedding terms do not
(docs/judge.md, "The compact global head"); junk is the coherence gate's (coherence.py).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .features import HAND_FEATURES, MiniLMEncoder, build_features, embed_pairs, full_prompt, hand_features

COMPACT_EMBEDDING_FEATURES = ("cos(x,o)", "cos(x,o)*log_words(o)")
N_COMPACT_FEATURES = len(HAND_FEATURES) + len(COMPACT_EMBEDDING_FEATURES)
GLOBAL_FEATURE_SETS = ("compact", "full")


def _compact_features(encoder: MiniLMEncoder, prompts: Sequence[str], outputs: Sequence[str],
                      progress: bool = False) -> np.ndarray:
    """``[hand | cos(x,o) | cos(x,o)*log_words(o)]`` (``N_COMPACT_FEATURES`` columns)."""
    if not len(outputs):
        return np.zeros((0, N_COMPACT_FEATURES), np.float32)
    ex, eo = embed_pairs(encoder, prompts, outputs, progress)
    hand = np.stack([hand_features(p, o) for p, o in zip(prompts, outputs)])
    cos = (ex * eo).sum(1, keepdims=True)
    lw = hand[:, HAND_FEATURES.index("log_words")][:, None]
    return np.concatenate([hand, cos, cos * lw], axis=1).astype(np.float32)


def global_features(encoder: MiniLMEncoder, instructions: Sequence[str], inputs: Sequence[str],
                    outputs: Sequence[str], *, feature_set: str = "compact", progress: bool = False) -> np.ndarray:
    """The global head's features of ``feature_set``: ``compact`` (hand features, ``cos(x,o)``,
    ``cos(x,o)*log_words(o)``: ``N_COMPACT_FEATURES`` columns) or ``full`` (:func:`build_features`)."""
    if feature_set not in GLOBAL_FEATURE_SETS:
        raise ValueError(f"unknown global feature set {feature_set!r}; one of {GLOBAL_FEATURE_SETS}")
    if feature_set == "full":
        return build_features(encoder, instructions, inputs, outputs, progress=progress)
    return _compact_features(encoder, [full_prompt(i, x) for i, x in zip(instructions, inputs)], outputs, progress)
