"""``binary_feedme``: supervised fine-tuning on the preferred output of each collected pair (paper Sec. 4, "Binary
FeedME"; tatsu-lab/alpaca_farm ships no code or script for it, only the checkpoints ``feedme-sim``/``feedme-human``).

Data: each row of the ``preferences`` stage (``instruction, input, output_1, output_2, preference``, collected through
``AlpacaFarmPairwise-v0``) gives one demonstration ``(format_prompt(instruction, input), preferred output)``:
``output_1`` when ``preference`` is 1, ``output_2`` when it is 2 (a soft label in (1, 2) counts for the side it leans
to). Draws (1.5, the legacy 0, or two identical outputs, which tatsu-lab/alpaca_farm
``src/alpaca_farm/auto_annotations/pairwise_annotators.py`` ``PairwiseAutoAnnotator._preprocess`` marks 0 whatever the
annotator would say) and unlabeled rows (None/NaN) name no preferred output and are skipped.

Training: continued SFT from the SFT policy with the shared loop (:func:`~.sft_loop.train_sft`: loss on output + EOS
only). The paper gives no hyper-parameters (v1); :class:`BinaryFeedMEConfig` keeps the SFT recipe of
``examples/scripts/sft.sh`` (inferred: the reference trains every SFT-style model with ``examples/supervised.py``).
Sampling: temperature 0.7, as every method at evaluation (:class:`~.sft.BaseAgent`).

Which output won (:func:`~.common.preference_pairs`) and the output-dir record (:func:`~.common.check_output_dir`: a
rerun must not pick up a model trained on other data, with another config or from another start policy) are the
shared helpers of ``agents/common.py``, used by ``binary_reward_conditioning`` and ``dpo`` too.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from ..utils import digest
from .base import register_agent
from .common import PreferenceLearner, check_output_dir, policy_fingerprint, preference_pairs
from .sft_loop import SFTConfig, train_sft


@dataclass
class BinaryFeedMEConfig(SFTConfig):
    """:class:`~.sft_loop.SFTConfig` unchanged: the paper publishes no FeedME hyper-parameters, so these are the SFT
    recipe of ``examples/scripts/sft.sh`` (3 epochs, lr 2e-5, cosine, warm-up 3%, weight decay 0, batch 128, max
    length 512, seed 42) -- inferred: the reference trains its SFT-style models with ``examples/supervised.py``."""


def feedme_pairs(preferences: Any) -> list[tuple[str, str]]:
    """The ``(prompt, preferred output)`` demonstrations Binary FeedME trains on (draws and unlabeled rows skipped)."""
    return [(r["prompt"], r["chosen"]) for r in preference_pairs(preferences)]


@register_agent("binary_feedme")
class BinaryFeedMEAgent(PreferenceLearner):
    """SFT of the SFT policy on the preferred outputs, then sampling (temperature 0.7 by default).

    ``config``: a :class:`BinaryFeedMEConfig` or a mapping of its fields. Generation kwargs as :class:`~.sft.BaseAgent`
    (``max_new_tokens, temperature, top_p, batch_size, seed``). ``fit`` fine-tunes the ``policy`` stage in place (the
    pipeline hands each method its own copy) and saves it to ``<output_dir>/model``; a rerun on a finished
    ``output_dir`` loads it, an interrupted one resumes from its checkpoint. ``respond`` before ``fit`` raises.
    """

    name = "binary_feedme"
    ENVS: ClassVar[dict[str, dict[str, Any]]] = {}
    CONFIG_CLASS: ClassVar[type] = BinaryFeedMEConfig

    def training_pairs(self, preferences: Any) -> list[tuple[str, str]]:
        """The ``(prompt, output)`` demonstrations this method trains on."""
        return feedme_pairs(preferences)

    def fit(self, envs: Mapping[str, Any] | None = None, *, policy: Any = None, preferences: Any = None,
            output_dir: str | None = None, **_: Any) -> None:
        """Continued SFT of the ``policy`` stage (in place) on :meth:`training_pairs`, saved to
        ``<output_dir>/model``; raises ``ValueError`` on a missing stage or an ``output_dir`` of another run."""
        start = self._start_policy(policy, preferences=preferences, output_dir=output_dir)
        pairs = self.training_pairs(preferences)
        check_output_dir(output_dir, {"method": self.name, "config": dataclasses.asdict(self.config),
                                      "data": digest([list(p) for p in pairs])[:16],
                                      "start": policy_fingerprint(start)})
        self.prepare(start)
        self.summary = train_sft(start, pairs, self.config, Path(output_dir), progress=self.progress)
        self.fitted = True

    def prepare(self, policy: Any) -> None:
        """Changes to the policy before training (none here; reward conditioning adds its tokens)."""
