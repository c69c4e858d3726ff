"""``binary_feedme``: supervised fine-tuning on the preferred output of each collected pair (paper Sec. 4, "Binary
FeedME"; tatsu-lab/alpaca_farm ships no code or script for it, only the checkpoints ``feedme-sim``/``feedme-human``).

Data: each row of the ``preferences`` stage (``instruction, input, output_1, output_2, preference``, collected through
``AlpacaFarmPairwise-v0``) gives one demonstration ``(format_prompt(instruction, input), preferred output)``:
``output_1`` when ``preference`` is 1, ``output_2`` when it is 2 (a soft label in (1, 2) counts for the side it leans
to). Draws (1.5, the legacy 0, or two identical outputs -- reference notes Sec. 8.1) and unlabeled rows (None/NaN)
name no preferred output and are skipped.

Training: continued SFT from the SFT policy with the shared loop (:func:`~.sft_loop.train_sft`: loss on output + EOS
only). The paper gives no hyper-parameters (v1); :class:`BinaryFeedMEConfig` keeps the SFT recipe of
``examples/scripts/sft.sh`` (inferred: "same ``supervised.py`` recipe as SFT"). Sampling: temperature 0.7, as every
method at evaluation (:class:`~.sft.BaseAgent`).

:func:`preference_pairs` (which output won) and :func:`check_output_dir` (a rerun must not pick up a model trained on
other data, with another config or from another start policy) are shared with ``binary_reward_conditioning`` and
``dpo``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch

from ..data import format_prompt
from ..preference import parse_preference
from ..utils import atomic_write_text, digest
from .base import register_agent
from .sft import BaseAgent
from .sft_loop import SFTConfig, train_sft

PREFERENCE_COLUMNS = ("instruction", "output_1", "output_2", "preference")


@dataclass
class BinaryFeedMEConfig(SFTConfig):
    """:class:`~.sft_loop.SFTConfig` unchanged: the paper publishes no FeedME hyper-parameters, so these are the SFT
    recipe of ``examples/scripts/sft.sh`` (3 epochs, lr 2e-5, cosine, warm-up 3%, weight decay 0, batch 128, max
    length 512, seed 42) -- inferred, as the reference notes say: "same ``supervised.py`` recipe as SFT"."""


def as_config(cls: type, value: Any) -> Any:
    """``value`` as a ``cls`` dataclass: an instance as is, a mapping of its fields, or ``None`` for the defaults."""
    if isinstance(value, cls):
        return value
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(f"expected a {cls.__name__} or a mapping of its fields, got {type(value).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value or {}) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
    return cls(**dict(value or {}))


def _text(value: Any) -> str:
    """A text field of a row; None / NaN (a pandas gap) is empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def preference_pairs(preferences: Any) -> list[dict[str, str]]:
    """One ``{"instruction", "input", "prompt", "chosen", "rejected"}`` per row that has a winner, in row order.

    ``preferences``: rows in AlpacaFarm's layout (a list of mappings or a pandas DataFrame). ``chosen`` is
    ``output_1`` when ``preference`` < 1.5 (1: output_1 preferred) and ``output_2`` when > 1.5 (2); draws (1.5, legacy
    0, identical outputs) and unlabeled rows are left out. ``prompt`` is the AlpacaFarm template over instruction and
    input.
    """
    rows = preferences.to_dict("records") if hasattr(preferences, "to_dict") else list(preferences)
    out: list[dict[str, str]] = []
    for i, row in enumerate(rows):
        missing = [c for c in PREFERENCE_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"preferences row {i} lacks {missing}; expected columns {PREFERENCE_COLUMNS} (+ input)")
        p = parse_preference(row["preference"], "<preferences>", i)
        o1, o2 = _text(row["output_1"]), _text(row["output_2"])
        if p is None or p == 1.5 or o1 == o2:  # unlabeled, or a draw (identical outputs are one): no winner
            continue
        first_wins = p < 1.5
        instruction, inp = _text(row["instruction"]), _text(row.get("input"))
        out.append({"instruction": instruction, "input": inp, "prompt": format_prompt(instruction, inp),
                    "chosen": o1 if first_wins else o2, "rejected": o2 if first_wins else o1})
    if not out:
        raise ValueError(f"none of the {len(rows)} preference rows has a winner (all draws or unlabeled)")
    return out


@torch.no_grad()
def policy_fingerprint(policy: Any) -> str:
    """A cheap identity of a policy's weights: every parameter's name, shape and first 1024 values."""
    h = hashlib.sha256()
    for name, p in policy.model.named_parameters():
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(p.detach().reshape(-1)[:1024].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def check_output_dir(output_dir: str | Path, identity: Mapping[str, Any]) -> None:
    """Record what ``output_dir`` trains (``fit.json``: method, config, data digest, start policy); a rerun that would
    resume a model trained from anything else raises ``ValueError`` instead of silently reusing it."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fit.json"
    record = json.loads(json.dumps(dict(identity), sort_keys=True, default=str))
    if path.is_file():
        before = json.loads(path.read_text())
        if before != record:
            changed = sorted(k for k in set(before) | set(record) if before.get(k) != record.get(k))
            raise ValueError(f"{out} holds a run with different {changed}; use a fresh output_dir (or delete it)")
        return
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))


def feedme_pairs(preferences: Any) -> list[tuple[str, str]]:
    """The ``(prompt, preferred output)`` demonstrations Binary FeedME trains on (draws and unlabeled rows skipped)."""
    return [(r["prompt"], r["chosen"]) for r in preference_pairs(preferences)]


@register_agent("binary_feedme")
class BinaryFeedMEAgent(BaseAgent):
    """SFT of the SFT policy on the preferred outputs, then sampling (temperature 0.7 by default).

    ``config``: a :class:`BinaryFeedMEConfig` or a mapping of its fields. Generation kwargs as :class:`~.sft.BaseAgent`
    (``max_new_tokens, temperature, top_p, batch_size, seed``). ``fit`` fine-tunes the ``policy`` stage in place (the
    pipeline hands each method its own copy) and saves it to ``<output_dir>/model``; a rerun on a finished
    ``output_dir`` loads it, an interrupted one resumes from its checkpoint. ``respond`` before ``fit`` raises.
    """

    name = "binary_feedme"
    ENVS: dict[str, dict[str, Any]] = {}
    STAGES = ("policy", "preferences", "output_dir")
    CONFIG_CLASS: ClassVar[type] = BinaryFeedMEConfig

    def __init__(self, policy: Any = None, *, config: Any = None, **kwargs: Any):
        super().__init__(policy, **kwargs)
        self.config = as_config(self.CONFIG_CLASS, config)
        self.summary: dict[str, Any] = {}
        self.fitted = False

    @property
    def policy(self):
        if not self.fitted:
            raise RuntimeError(f"{self.name}: call fit(envs, policy=..., preferences=..., output_dir=...) first")
        return super().policy

    def training_pairs(self, preferences: Any) -> list[tuple[str, str]]:
        return feedme_pairs(preferences)

    def fit(self, envs: Mapping[str, Any] | None = None, *, policy: Any = None, preferences: Any = None,
            output_dir: str | None = None, **_: Any) -> None:
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

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": dataclasses.asdict(self.config)}
