"""What determines a distilled judge: :class:`JudgeConfig` (its cache key), the variants, the format versions ."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..utils import digest
from .features import DEFAULT_MAX_TOKENS

if TYPE_CHECKING:
    from .answer_bank import AnswerBank

VARIANTS = ("fast", "best")  # fast: linear head over frozen MiniLM; best: fine-tuned cross-encoder (cross_encoder.py)
ARTIFACT_FORMAT = 1
BANK_FORMAT = 1
BANK_FIELDS = ("bank", "bank_hidden", "bank_epochs")


@dataclass
class JudgeConfig:
    """What determines a trained judge (its cache key)."""

    variant: str = "fast"
    max_tokens: int = DEFAULT_MAX_TOKENS
    l2: float = 3e-3  # on standardised feature differences, per pair (mean loss)
    n_bootstrap: int = 4  # pool members, besides the full-data head
    seed: int = 0
    models: tuple[str, ...] | None = None  # None: every annotated model in the data dir
    max_pairs_per_model: int | None = None  # None: all 805
    # Synthetic negatives (``synthetic_negatives``): one per ``1/augment_fraction`` real pairs, each weighted
    # ``augment_weight`` relative to a real pair. 0 turns the augmentation off.
    augment_fraction: float = 0.5
    augment_weight: float = 0.2
    # Answer bank (answer_bank.py): on instructions with GPT-4-labelled answers in the data dir (the 805 eval
    # instructions), score with an MLP head over hand + bank features; elsewhere with the global head above.
    bank: bool = True
    bank_hidden: int = 32
    bank_epochs: int = 40

    def key(self) -> str:
        """Cache key of the global head (the bank fields are not part of it)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in BANK_FIELDS}
        return digest({"format": ARTIFACT_FORMAT, **fields})[:16]

    def bank_key(self, bank: AnswerBank) -> str:
        """Cache key of the bank heads: the whole config and the bank's content."""
        return digest({"format": BANK_FORMAT, **dataclasses.asdict(self), "bank": bank.key})[:16]
