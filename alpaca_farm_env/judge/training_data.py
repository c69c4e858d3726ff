"""The judge's training data: GPT-4-labelled pairs from the data dir (or the hub), the synthetic degenerate negatives
added to them, and the labels (P(output_2 better))."""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..utils import stable_hash

if TYPE_CHECKING:
    from .config import JudgeConfig


def load_training_pairs(
    data_dir: str | os.PathLike | None = None,
    models: Sequence[str] | None = None,
    max_pairs_per_model: int | None = None,
) -> list[dict[str, Any]]:
    """GPT-4-labelled pairs with a ``model`` field; rows without a label are dropped.

    Local data dir: the AlpacaEval-1 GPT-4 annotation files. Hub: ``alpaca_gpt4_preference`` (``model`` = "hub").
    """
    from ..data import (
        list_annotated_models,
        load_gpt4_annotations,
        load_preference,
        resolve_data_dir,
    )

    root = resolve_data_dir(data_dir)
    available = list_annotated_models(root) if root is not None else []
    rows: list[dict[str, Any]] = []
    if available:
        chosen = list(models) if models is not None else available
        unknown = sorted(set(chosen) - set(available))
        if unknown:
            raise ValueError(f"no GPT-4 annotations for {unknown} in {root}; available: {', '.join(available)}")
        for m in chosen:
            anns = [r for r in load_gpt4_annotations(m, root) if r["preference"] is not None]
            if max_pairs_per_model is not None:
                anns = anns[:max_pairs_per_model]
            rows += [{"instruction": r["instruction"], "input": r.get("input", ""), "output_1": r["output_1"],
                      "output_2": r["output_2"], "preference": float(r["preference"]), "model": m} for r in anns]
    else:
        # a user's machine without the annotation files: the hub's GPT-4 preference set (real `datasets` path)
        pref = load_preference("alpaca_gpt4_preference", root)
        if max_pairs_per_model is not None:
            pref = pref[:max_pairs_per_model]
        rows = [dict(r, model="alpaca_gpt4_preference") for r in pref if r["preference"] is not None]
    if not rows:
        raise ValueError("no GPT-4-labelled pairs to train the distilled judge on")
    return rows


def labels(rows: Sequence[dict]) -> np.ndarray:
    """GPT-4 preference (1, 1.5, 2 or a float in between) -> P(output_2 better)."""
    return np.asarray([float(r["preference"]) - 1.0 for r in rows], dtype=np.float64)


SYNTHETIC_KINDS = ("mismatched", "truncated", "repetitive", "template_echo", "near_empty")


def _words_prefix(text: str, n_words: int) -> str:
    """The text up to its ``n_words``-th word (keeps the original spacing and formatting)."""
    m = list(re.finditer(r"\S+", text))
    if n_words >= len(m):
        return text
    return text[: m[max(n_words, 1) - 1].end()] if m else ""


def degenerate_output(kind: str, row: dict, other: dict, key: str) -> str:
    """One degenerate answer to ``row``'s instruction, built from ``row``'s model output (``output_2``) and another
    row of the same model (``other``): the failure modes of a weak or base model that no annotated model shows.

    mismatched: the answer to a different instruction; truncated: cut mid-sentence after 15-45% of its words;
    repetitive: an opening phrase looped; template_echo: a short start followed by an echoed Alpaca prompt template
    and another instruction; near_empty: nothing or a few words.
    """
    o = row["output_2"].strip()
    h = stable_hash("synthetic", key)
    n = len(o.split())
    if kind == "mismatched":
        return other["output_2"]
    if kind == "truncated":
        cut = _words_prefix(o, max(3, int(n * (0.15 + 0.3 * (h % 100) / 100))))
        return cut.rstrip(" .!?;:)\"'`*")
    if kind == "repetitive":
        phrase = _words_prefix(o, 6 + h % 10).rstrip()
        return " ".join([phrase] * (3 + h % 6))
    if kind == "template_echo":
        start = _words_prefix(o, 8 + h % 20)
        return (f"{start}\n\n### Instruction:\n{other['instruction']}\n\n### Response:\n"
                f"{_words_prefix(other['output_2'], 10 + h % 30)}")
    if kind == "near_empty":
        return _words_prefix(o, h % 4)  # 0 words: the empty answer
    raise ValueError(f"unknown synthetic kind {kind!r}; one of {SYNTHETIC_KINDS}")


def synthetic_negatives(rows: Sequence[dict], fraction: float, seed: int = 0) -> list[dict]:
    """Degenerate answers GPT-4 would certainly rank below the davinci003 reference, labelled as reference wins.

    The annotated models are all fluent (the weakest, phi-2, wins 31% against davinci003), so a head fitted on them
    alone never sees incoherent, off-topic, looping, template-echoing or cut-off text and rates it like any other
    short answer. About ``fraction * len(rows)`` rows are chosen by a stable hash of (seed, model, instruction); each
    gets one kind, again by stable hash, built from the same model's outputs only, so a leave-one-model-out fold can
    drop the held-out model's synthetic rows with its real ones. Rows carry ``model``, ``synthetic`` = kind and
    ``preference`` = 1.0 (output_1 = the reference wins).
    """
    if fraction <= 0:
        return []
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    out = []
    for m, rs in by_model.items():
        if len(rs) < 2:
            continue
        for i, r in enumerate(rs):
            key = f"{seed}|{m}|{r['instruction']}|{r.get('input', '')}"
            h = stable_hash("pick", key)
            if (h % 10_000) / 10_000 >= fraction:
                continue
            kind = SYNTHETIC_KINDS[stable_hash("kind", key) % len(SYNTHETIC_KINDS)]
            other = rs[(i + 1 + stable_hash("other", key) % (len(rs) - 1)) % len(rs)]  # never the row itself
            o2 = degenerate_output(kind, r, other, key)
            if o2 == r["output_1"]:
                continue
            out.append({"instruction": r["instruction"], "input": r.get("input", ""), "output_1": r["output_1"],
                        "output_2": o2, "preference": 1.0, "model": m, "synthetic": kind})
    return out


def with_synthetic(rows: Sequence[dict], config: "JudgeConfig") -> tuple[list[dict], np.ndarray]:
    """``rows`` + their synthetic negatives, and per-row base weights (1 real, ``config.augment_weight`` synthetic)."""
    syn = synthetic_negatives(rows, config.augment_fraction, config.seed) if config.augment_weight > 0 else []
    weights = np.concatenate([np.ones(len(rows)), np.full(len(syn), float(config.augment_weight))])
    return list(rows) + syn, weights
