"""Helpers shared by several methods, written once and imported by the method files.

* stage products: :func:`reward_of_stage` (the ``reward`` stage's spec and kwargs), :func:`preference_pairs` (which
  output of each collected pair won);
* the evaluator guard of methods that rerank or learn from a reward: :func:`refuse_evaluator_reward`;
* configs: :func:`as_config` (a dataclass, or one built from a preset's mapping);
* :class:`PreferenceLearner`: the base of the methods that train the ``policy`` stage on the collected pairs;
* resumable output dirs: :func:`policy_fingerprint` and :func:`check_output_dir` (a rerun never picks up a model
  trained from other data, config or start policy), :func:`read_jsonl` (rows appended per batch, a torn last line
  cut off).

Agents sit above the envs: what they need to know about a reward they ask :mod:`alpaca_farm_env.envs.reward_info`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch

from ..envs.reward_info import format_prompt, reward_judges_like
from ..preference import parse_preference
from ..tracking import untracked
from ..utils import atomic_write_text
from .sft import BaseAgent

PREFERENCE_COLUMNS = ("instruction", "output_1", "output_2", "preference")


def reward_of_stage(stage: Any) -> tuple[Any, dict[str, Any]]:
    """``(spec, kwargs)`` of a ``reward`` stage product: ``{"reward": ..., "reward_kwargs": {...}}``, or a plain spec
    (a registered name, a backend instance)."""
    if isinstance(stage, Mapping) and "reward" in stage:
        return stage["reward"], dict(stage.get("reward_kwargs") or {})
    return stage, {}


def refuse_evaluator_reward(method: str, reward: Any, reward_kwargs: Mapping[str, Any] | None, evaluator: Any) -> None:
    """Raise ``ValueError`` when ``reward`` (a spec with its kwargs, or a backend) would judge with ``evaluator``'s
    judge: a method that reranks or trains against the evaluator overstates its gain. Returns ``None`` otherwise
    (always when ``evaluator`` is ``None``). Judge identities are compared, not names
    (:func:`~alpaca_farm_env.envs.reward_info.reward_judges_like`)."""
    if reward_judges_like(reward, dict(reward_kwargs or {}), evaluator):
        raise ValueError(
            f"{method} would optimise against the evaluator's judge ({getattr(evaluator, 'name', evaluator)!r}); "
            "that overstates the gain. Pick another reward backend (e.g. --reward length or a trained reward_model)")


def as_config(cls: type, value: Any) -> Any:
    """``value`` as a ``cls`` dataclass: an instance as is, a mapping of its fields, or ``None`` for the defaults.
    Unknown fields raise ``ValueError``, anything else ``TypeError``."""
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
    input. Raises ``ValueError`` when a row lacks a column or no row has a winner.
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
    """A cheap identity of a policy's weights (16 hex digits): every parameter's name, shape and first 1024 values.
    It is part of the ``fit.json`` record of the preference learners' output dirs, so it must not change."""
    h = hashlib.sha256()
    for name, p in policy.model.named_parameters():
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(p.detach().reshape(-1)[:1024].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def check_output_dir(output_dir: str | Path, identity: Mapping[str, Any]) -> None:
    """Record what ``output_dir`` trains (``fit.json``: method, config, data digest, start policy); a rerun that would
    resume a model trained from anything else raises ``ValueError`` instead of silently reusing it. Returns ``None``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fit.json"
    record = json.loads(json.dumps(untracked(dict(identity)), sort_keys=True, default=str))  # tracking: not a key
    if path.is_file():
        before = json.loads(path.read_text())
        if before != record:
            changed = sorted(k for k in set(before) | set(record) if before.get(k) != record.get(k))
            raise ValueError(f"{out} holds a run with different {changed}; use a fresh output_dir (or delete it)")
        return
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file that a killed run may have left half-written; ``[]`` when there is none.

    A last line torn by the kill (no newline, or not JSON with nothing after it) is cut off the file, so the caller
    appends the rows it redoes after the good ones. A line that is not JSON with more lines after it raises
    ``ValueError`` (the file is damaged, not torn)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    rows, good_end, pos = [], 0, 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:  # no newline: the write was interrupted
            break
        line = data[pos:nl].strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if data[nl + 1 :].strip():
                    line_no = data[:pos].count(b"\n") + 1
                    raise ValueError(f"{path}: line {line_no} is not JSON (and not a torn last line)")
                break
        pos = good_end = nl + 1
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return rows


class PreferenceLearner(BaseAgent):
    """The base of the methods that train the ``policy`` stage on the ``preferences`` stage (binary FeedME, binary
    reward conditioning, DPO), then sample as :class:`~.sft.BaseAgent`.

    ``config``: a ``CONFIG_CLASS`` or a mapping of its fields. ``summary`` holds what training reported. ``policy`` is
    the trained policy: reading it before ``fit`` raises ``RuntimeError`` (so does ``respond``).
    """

    STAGES: ClassVar[tuple[str, ...]] = ("policy", "preferences", "output_dir")
    CONFIG_CLASS: ClassVar[type]

    def __init__(self, policy: Any = None, *, config: Any = None, **kwargs: Any):
        super().__init__(policy, **kwargs)
        self.config = as_config(self.CONFIG_CLASS, config)
        self.summary: dict[str, Any] = {}
        self.fitted = False

    @property
    def policy(self) -> Any:
        """The trained policy; raises ``RuntimeError`` before ``fit``."""
        if not self.fitted:
            raise RuntimeError(f"{self.name}: call fit(envs, policy=..., preferences=..., output_dir=...) first")
        return super().policy

    @policy.setter
    def policy(self, policy: Any) -> None:
        self._policy = policy

    def describe(self) -> dict[str, Any]:
        """The settings that determine the outputs, with the training ``config``."""
        return {**super().describe(), "config": dataclasses.asdict(self.config)}
