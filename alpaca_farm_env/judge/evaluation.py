"""The judge's fidelity to GPT-4, measured: leave-one-model-out over the GPT-4-annotated models, with "longer wins"
beside it, and the cross-fitted calibration of win-rates. Used by ``alpaca-farm judge eval``."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from .answer_bank import AnswerBank, BankHeads, fit_bank_head
from .bank_heads import _bank_stats
from .config import JudgeConfig
from .features import MiniLMEncoder, full_prompt, hand_features
from .heads import feature_scale, fit_bt_head, pair_features
from .training_data import labels, load_training_pairs, with_synthetic

MID_RANGE = (20.0, 60.0)  # GPT-4 win-rates where length alone is a poor judge (issue 3 target)


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y on x."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(slope), float(intercept)


def _logit(wr: Sequence[float] | np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(wr, float) / 100.0, 0.005, 0.995)
    return np.log(q / (1.0 - q))


def cross_fitted_calibration(pred: dict[str, float], target: dict[str, float]) -> dict[str, float]:
    """Calibrated win-rate per model from a line fitted on the *other* models (never in-sample).

    The line maps logit(predicted win-rate) to logit(GPT-4 win-rate): win-rates are bounded, and on the 21 models a
    logit line cross-fits better than a straight line in percent (judge MAE 8.2 vs 9.0 points).
    """
    out = {}
    for m in pred:
        others = [o for o in pred if o != m]
        if len(others) < 2:
            out[m] = pred[m]
            continue
        slope, intercept = _fit_line(_logit([pred[o] for o in others]), _logit([target[o] for o in others]))
        out[m] = float(100.0 / (1.0 + np.exp(-(slope * _logit([pred[m]])[0] + intercept))))
    return out


def _agreement(judge_pref: np.ndarray, gpt4_pref: np.ndarray) -> tuple[float, int]:
    """Agreement on GPT-4's non-draw rows; a judge draw counts one half."""
    mask = (gpt4_pref == 1.0) | (gpt4_pref == 2.0)
    if not mask.any():
        return float("nan"), 0
    j, g = judge_pref[mask], gpt4_pref[mask]
    return float(np.mean(np.where(j == 1.5, 0.5, (j == g).astype(float)))), int(mask.sum())


def _summary(per_model: dict[str, dict], key: str) -> dict[str, float]:
    from scipy.stats import spearmanr

    models = list(per_model)
    gpt4 = np.asarray([per_model[m]["gpt4_win_rate"] for m in models])
    pred = np.asarray([per_model[m][key] for m in models])
    rho = float(spearmanr(pred, gpt4).statistic) if len(models) >= 3 else float("nan")
    return {"mae": float(np.mean(np.abs(pred - gpt4))), "spearman": rho}


def evaluate_lomo(
    data_dir: str | os.PathLike | None = None,
    config: JudgeConfig | None = None,
    *,
    models: Sequence[str] | None = None,
    max_pairs_per_model: int | None = None,
    heads: Sequence[str] = ("bank", "global"),
    progress: bool = True,
) -> dict[str, Any]:
    """Leave-one-model-out fidelity to GPT-4 over the annotated models, with the "longer wins" baseline beside it.

    For each model, the judge is rebuilt without that model and judges its pairs. ``heads``: ``bank`` = the bank
    heads (how the judge scores the eval instructions; the held-out model's answers leave the bank too, and every
    training pair sees the bank without its own model), ``global`` = the global head alone (how it scores any other
    instruction). Reported per model and overall: per-pair agreement on GPT-4's non-draw rows, win-rate vs
    davinci003 (hard labels, as the benchmark computes it; ``metrics.win_rate``), its cross-fitted logit
    calibration, MAE against GPT-4's win-rate and Spearman over models. ``judge`` = the first of ``heads``.
    """
    from ..metrics import win_rate

    heads = tuple(heads)
    if not heads or set(heads) - {"bank", "global"}:
        raise ValueError(f"heads must be a non-empty subset of ('bank', 'global'), got {heads!r}")
    config = config or JudgeConfig()
    models = list(models) if models is not None else list(config.models or []) or None
    rows = load_training_pairs(data_dir, models, max_pairs_per_model or config.max_pairs_per_model)
    by_model: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_model.setdefault(r["model"], []).append(i)
    if len(by_model) < 2:
        raise ValueError("leave-one-model-out evaluation needs GPT-4 annotations of at least 2 models")
    n = len(rows)
    # synthetic negatives enter training folds only: built per model, dropped with the held-out model, never judged
    all_rows, base_weight = with_synthetic(rows, config)
    row_model = np.asarray([r["model"] for r in all_rows], dtype=object)
    y_all = labels(all_rows)
    gpt4_pref = np.asarray([float(r["preference"]) for r in rows])
    same = np.asarray([r["output_1"] == r["output_2"] for r in rows])
    len1 = np.asarray([len(r["output_1"]) for r in rows])
    len2 = np.asarray([len(r["output_2"]) for r in rows])
    prefs = {"longer": np.where(len2 > len1, 2.0, np.where(len2 < len1, 1.0, 1.5))}

    def folds(desc):
        it = list(by_model)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=desc, unit="model")
        return it

    def hard(diff, idx):
        diff = np.where(same[idx], 0.0, diff)
        return np.where(diff > 0, 2.0, np.where(diff < 0, 1.0, 1.5))

    if "bank" in heads:
        bank = AnswerBank(rows)
        ins = [r["instruction"] for r in all_rows]
        inp = [r.get("input", "") or "" for r in all_rows]
        q1 = bank.query(ins, inp, [r["output_1"] for r in all_rows])  # similarities once; exclusions per fold
        q2 = bank.query(ins, inp, [r["output_2"] for r in all_rows])
        prompts = [full_prompt(i, x) for i, x in zip(ins, inp)]
        H1 = np.stack([hand_features(p_, r["output_1"]) for p_, r in zip(prompts, all_rows)])
        H2 = np.stack([hand_features(p_, r["output_2"]) for p_, r in zip(prompts, all_rows)])
        pref = np.full(n, np.nan)
        for m in folds("leave-one-model-out (bank heads)"):
            exclude = [(r["model"], m) for r in all_rows]
            X1 = np.concatenate([H1, bank.features(q1, exclude)], axis=1)
            X2 = np.concatenate([H2, bank.features(q2, exclude)], axis=1)
            test = np.asarray(by_model[m])
            train = np.flatnonzero(row_model != m)
            real_train = train[train < n]
            mu, scale = _bank_stats(X1[real_train], X2[real_train])
            W1, b1, W2, wlin = fit_bank_head(X1[train], X2[train], y_all[train], base_weight[train], mu, scale,
                                             hidden=config.bank_hidden, epochs=config.bank_epochs, seed=config.seed * 1000)
            bh = BankHeads(mu=mu, scale=scale, W1=W1[None], b1=b1[None], W2=W2[None], wlin=wlin[None])
            pref[test] = hard(bh.scores(X2[test], 0) - bh.scores(X1[test], 0), test)
        prefs["bank"] = pref
    if "global" in heads:
        encoder = MiniLMEncoder(max_tokens=config.max_tokens)
        syn_model = row_model[n:]
        f1_all, f2_all = pair_features(encoder, all_rows, progress=progress)
        f1, f2 = f1_all[:n], f2_all[:n]
        pref = np.full(n, np.nan)
        for m in folds("leave-one-model-out (global head)"):
            test = np.asarray(by_model[m])
            train = np.setdiff1d(np.arange(n), test)
            scale = feature_scale(f1[train], f2[train])
            train = np.concatenate([train, n + np.flatnonzero(syn_model != m)]).astype(int)
            w = fit_bt_head((f2_all[train] - f1_all[train]) / scale, y_all[train], config.l2, base_weight[train])
            pref[test] = hard(((f2[test] - f1[test]) / scale) @ w, test)
        prefs["global"] = pref
    prefs["judge"] = prefs[heads[0]]
    keys = ["judge"] + [h for h in heads] + ["longer"]

    per_model: dict[str, dict[str, Any]] = {}
    for m, idx in by_model.items():
        idx = np.asarray(idx)
        per_model[m] = {"n": int(len(idx)), "gpt4_win_rate": win_rate(gpt4_pref[idx])["win_rate"]}
        for key in keys:
            per_model[m][f"{key}_win_rate"] = win_rate(prefs[key][idx])["win_rate"]
            per_model[m][f"{key}_agreement"] = _agreement(prefs[key][idx], gpt4_pref[idx])[0]
    target = {m: v["gpt4_win_rate"] for m, v in per_model.items()}
    for key in keys:
        cal = cross_fitted_calibration({m: v[f"{key}_win_rate"] for m, v in per_model.items()}, target)
        for m in per_model:
            per_model[m][f"{key}_calibrated_win_rate"] = cal[m]
    mid = [m for m, v in per_model.items() if MID_RANGE[0] <= v["gpt4_win_rate"] <= MID_RANGE[1]]
    mid_idx = np.concatenate([np.asarray(by_model[m]) for m in mid]) if mid else np.asarray([], int)
    summary: dict[str, Any] = {}
    for key in keys:
        raw = _summary(per_model, f"{key}_win_rate")
        cal = _summary(per_model, f"{key}_calibrated_win_rate")
        summary[key] = {
            "agreement": _agreement(prefs[key], gpt4_pref)[0],
            "agreement_mid": _agreement(prefs[key][mid_idx], gpt4_pref[mid_idx])[0] if mid else float("nan"),
            "mae": raw["mae"], "spearman": raw["spearman"],
            "mae_calibrated": cal["mae"], "spearman_calibrated": cal["spearman"],
        }
    all_models = list(per_model)
    line = _fit_line(_logit([per_model[m]["judge_win_rate"] for m in all_models]), _logit([target[m] for m in all_models]))
    return {
        "protocol": "leave-one-model-out over the AlpacaEval-1 GPT-4-annotated models; win-rates vs text-davinci-003",
        "config": dataclasses.asdict(config),
        "heads": list(heads),
        "n_pairs": len(rows),
        "n_synthetic": len(all_rows) - len(rows),
        "models": all_models,
        "mid_range_models": mid,
        "summary": summary,
        "per_model": per_model,
        "calibration_logit_line_all_models": {"slope": line[0], "intercept": line[1]},
    }
