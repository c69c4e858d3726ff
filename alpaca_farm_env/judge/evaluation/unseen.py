"""Leave-instruction-out: K folds of the annotated eval *instructions*; a fold's instructions give no training pair,
no synthetic negative and no bank entry, the judge is trained on the rest by the package's own training functions and
judges them. This is the situation of every RL training prompt (an instruction the judge never saw), so it measures
the global head."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Sequence

import numpy as np

from ...utils import stable_hash
from ..answer_bank import AnswerBank
from ..config import JudgeConfig
from ..features import MiniLMEncoder, full_prompt
from ..training_data import load_training_pairs
from .scoring import UNSEEN_TARGETS, _agreement, _gain_over, _model_report, longer_preference, rows_by_model


def instruction_fold(instruction: str, inp: str, n_folds: int) -> int:
    """The fold of an instruction: a stable hash (md5, identical across processes, unlike ``hash()``) of its prompt
    as the judge and the bank key it (``instruction + "\n\n" + input``)."""
    return stable_hash("leave-instruction-out", full_prompt(instruction, inp or "")) % n_folds


def leave_instruction_out_split(rows: Sequence[dict], fold: int, n_folds: int) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows) of ``fold``: every pair on a held-out instruction is held out."""
    train, test = [], []
    for r in rows:
        (test if instruction_fold(r["instruction"], r.get("input", ""), n_folds) == fold else train).append(r)
    return train, test


def _judge_fold(k: int, n_folds: int, rows: list[dict], fit_config: JudgeConfig,
                encoder: MiniLMEncoder) -> tuple[list[float], dict[str, Any]]:
    """Train the judge without fold ``k``'s instructions and judge its pairs: returns the preferences of the held-out
    pairs (in row order) and what the fold's record says about training (sizes, leaks, routing)."""
    from ..bank_heads import train_bank_heads
    from ..heads import train_artifact
    from ..judge import DistilledJudge

    train_rows, test_rows = leave_instruction_out_split(rows, k, n_folds)
    if not test_rows or not train_rows:
        raise ValueError(f"fold {k} of {n_folds} has no {'held-out' if not test_rows else 'training'} pairs; "
                         "use fewer folds or more pairs")
    art = train_artifact(fit_config, rows=train_rows, encoder=encoder, progress=False)
    bank = bank_art = None
    if fit_config.bank:
        bank = AnswerBank(train_rows, tfidf_bits=fit_config.tfidf_bits)
        bank_art = train_bank_heads(fit_config, bank, train_rows, progress=False)
    judge = DistilledJudge(config=fit_config, artifact=art, encoder=encoder, bank=bank or False,
                           bank_artifact=bank_art, progress=False)
    anns = judge.compare([r["instruction"] for r in test_rows], [r.get("input", "") or "" for r in test_rows],
                         [r["output_1"] for r in test_rows], [r["output_2"] for r in test_rows])
    scored_by: dict[str, int] = {}
    for a in anns:
        scored_by[a.extra.get("scored_by", "?")] = scored_by.get(a.extra.get("scored_by", "?"), 0) + 1
    train_prompts = {full_prompt(r["instruction"], r.get("input", "") or "") for r in train_rows}
    held_out = {full_prompt(r["instruction"], r.get("input", "") or "") for r in test_rows}
    record = {
        "fold": k,
        "n_instructions_held_out": len(held_out),
        "n_pairs_held_out": len(test_rows),
        "n_pairs_train": art.meta["n_pairs"],
        "n_synthetic_train": art.meta["n_synthetic"],
        "held_out_in_training": len(held_out & train_prompts),
        "held_out_in_bank": sum(bank.has(r["instruction"], r.get("input", "")) for r in test_rows) if bank else 0,
        "bank_instructions": len(bank) if bank else 0,
        "scored_by": scored_by,
    }
    return [a.preference for a in anns], record


def evaluate_leave_instruction_out(
    data_dir: str | os.PathLike | None = None,
    config: JudgeConfig | None = None,
    *,
    n_folds: int = 5,
    progress: bool = True,
) -> dict[str, Any]:
    """Fidelity to GPT-4 on instructions the judge has never seen: ``n_folds`` folds of the annotated instructions.

    For each fold, the pairs on its instructions are held out; the judge is built from the other pairs exactly as the
    package builds it -- ``heads.train_artifact`` (synthetic negatives from the training rows only, feature scale from
    them), an :class:`AnswerBank` of the training rows and ``bank_heads.train_bank_heads`` on them -- and a
    :class:`DistilledJudge` of those parts judges the held-out pairs. The held-out instructions are not in the bank,
    so the judge routes them to its global head, as it does every RL training prompt (``folds[*].scored_by`` counts
    it). Only head 0 is fitted (``n_bootstrap=0``: head 0 is fitted on all pairs, whatever the number of pool
    members): the ``distilled_gpt4`` judge. Every pair is held out once, so each model's win-rate comes from
    held-out judgments only. Reported as in :func:`evaluate_lomo`, with ``UNSEEN_TARGETS``: returns the summary,
    the targets (value, standard error, target, met), one record per fold and the per-model figures.
    """
    config = config or JudgeConfig()
    if config.variant != "fast":
        raise ValueError(f"leave-instruction-out measures the 'fast' judge, got variant {config.variant!r}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    t_start = time.time()
    rows = load_training_pairs(data_dir, config.models, config.max_pairs_per_model)
    n = len(rows)
    prompts = [full_prompt(r["instruction"], r.get("input", "") or "") for r in rows]
    fold_of = np.asarray([instruction_fold(r["instruction"], r.get("input", ""), n_folds) for r in rows])
    by_model = rows_by_model(rows)
    gpt4_pref = np.asarray([float(r["preference"]) for r in rows])
    prefs = {"judge": np.full(n, np.nan), "longer": longer_preference(rows)}
    fit_config = dataclasses.replace(config, n_bootstrap=0)
    encoder = MiniLMEncoder(max_tokens=config.max_tokens)  # one encoder: its SQLite cache embeds each text once
    iterator = range(n_folds)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="leave-instruction-out", unit="fold")
    folds = []
    for k in iterator:
        t0 = time.time()
        test = np.flatnonzero(fold_of == k)
        prefs["judge"][test], record = _judge_fold(k, n_folds, rows, fit_config, encoder)
        folds.append({
            **record,
            "agreement": _agreement(prefs["judge"][test], gpt4_pref[test])[0],
            "longer_agreement": _agreement(prefs["longer"][test], gpt4_pref[test])[0],
            "seconds": round(time.time() - t0, 1),
        })
    keys = ["judge", "longer"]
    per_model, summary, mid = _model_report(by_model, prefs, keys, gpt4_pref)
    return {
        "protocol": f"leave-instruction-out, {n_folds} folds of the annotated instructions (stable hash); a held-out "
                    "instruction gives no training pair, synthetic negative or bank entry; win-rates vs text-davinci-003",
        "config": dataclasses.asdict(config),
        "n_folds": n_folds,
        "n_pairs": n,
        "n_instructions": len(set(prompts)),
        "models": list(per_model),
        "mid_range_models": mid,
        "gpt4_prefers_longer": _agreement(gpt4_pref, prefs["longer"])[0],
        "summary": summary,
        # se: paired, clustered by instruction (points of agreement)
        "targets": _unseen_targets(rows, prefs, gpt4_pref, prompts, summary, mid),
        "folds": folds,
        "per_model": per_model,
        "seconds": round(time.time() - t_start, 1),
    }


def _unseen_targets(rows: Sequence[dict], prefs: dict[str, np.ndarray], gpt4_pref: np.ndarray,
                    prompts: Sequence[str], summary: dict[str, Any], mid: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each of ``UNSEEN_TARGETS``: its value (points of agreement over "longer wins", overall and on the mid-range
    models, with a standard error clustered by instruction; Spearman over models), the target and whether it is met."""
    mid_idx = np.flatnonzero(np.isin([r["model"] for r in rows], mid))
    gain = _gain_over(prefs["judge"], prefs["longer"], gpt4_pref, prompts)
    gain_mid = _gain_over(prefs["judge"][mid_idx], prefs["longer"][mid_idx], gpt4_pref[mid_idx],
                          [prompts[i] for i in mid_idx])
    targets = {
        "agreement_over_longer": {"value": gain["points"], "se": gain["se"]},
        "agreement_mid_over_longer": {"value": gain_mid["points"], "se": gain_mid["se"]},
        "spearman": {"value": summary["judge"]["spearman"]},
    }
    return {k: {**v, "target": UNSEEN_TARGETS[k], "met": bool(v["value"] >= UNSEEN_TARGETS[k])}
            for k, v in targets.items()}
