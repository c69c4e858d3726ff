"""What the judge evaluations share: agreement with GPT-4, win-rates per model and their calibration, the
"longer wins" baseline, and the paired gain over it."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

MID_RANGE = (20.0, 60.0)  # GPT-4 win-rates where length alone is a poor judge
# The judge on instructions it has never seen (points of agreement over "longer wins"; Spearman over
# the annotated models' win-rates).
UNSEEN_TARGETS = {"agreement_over_longer": 3.0, "agreement_mid_over_longer": 5.0, "spearman": 0.9}


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


def longer_preference(rows: Sequence[dict]) -> np.ndarray:
    """The "longer wins" baseline (the ``longer`` annotator): 2 if output_2 has more characters, 1 if fewer, else 1.5."""
    len1 = np.asarray([len(r["output_1"]) for r in rows])
    len2 = np.asarray([len(r["output_2"]) for r in rows])
    return np.where(len2 > len1, 2.0, np.where(len2 < len1, 1.0, 1.5))


def _length_split(pref: np.ndarray, gpt4_pref: np.ndarray, longer: np.ndarray) -> dict[str, float]:
    """How often ``pref`` picks the longer output, and its agreement where GPT-4 picked the longer / the shorter one
    (where GPT-4 went against length, "longer wins" scores 0: that is where a judge must beat it)."""
    g_longer = (gpt4_pref == longer) & (longer != 1.5)
    g_shorter = (gpt4_pref != longer) & (longer != 1.5) & (gpt4_pref != 1.5)
    return {
        "prefers_longer": _agreement(pref, longer)[0],
        "agreement_gpt4_prefers_longer": _agreement(pref[g_longer], gpt4_pref[g_longer])[0],
        "agreement_gpt4_prefers_shorter": _agreement(pref[g_shorter], gpt4_pref[g_shorter])[0],
    }


def _gain_over(pref: np.ndarray, base: np.ndarray, gpt4_pref: np.ndarray, clusters: Sequence[Any] | None = None) -> dict:
    """Agreement of ``pref`` minus that of ``base`` (points), on GPT-4's non-draw rows, with its standard error: the
    two are scored on the same pairs (paired), and pairs on one instruction are one cluster when ``clusters`` (e.g.
    the prompts) is given, since they share the instruction's difficulty."""
    mask = (gpt4_pref == 1.0) | (gpt4_pref == 2.0)

    def hits(p):
        return np.where(p[mask] == 1.5, 0.5, (p[mask] == gpt4_pref[mask]).astype(float))

    d = hits(pref) - hits(base)
    n = len(d)
    if n < 2:
        return {"points": float("nan") if n == 0 else 100 * float(d[0]), "se": float("nan")}
    mean = float(d.mean())
    if clusters is None:
        se = float(d.std(ddof=1) / np.sqrt(n))
    else:
        _, inv = np.unique(np.asarray(clusters, dtype=object)[mask].astype(str), return_inverse=True)
        tot, cnt = np.bincount(inv, weights=d), np.bincount(inv).astype(float)
        c = len(tot)
        se = float(np.sqrt(c / max(c - 1, 1) * np.sum((tot - mean * cnt) ** 2)) / n)
    return {"points": 100 * mean, "se": 100 * se}


def _model_report(
    by_model: dict[str, Sequence[int]], prefs: dict[str, np.ndarray], keys: Sequence[str], gpt4_pref: np.ndarray
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]], list[str]]:
    """Per model (win-rates from hard preferences, their cross-fitted calibration, agreement) and overall (agreement,
    agreement on the ``MID_RANGE`` models, MAE and Spearman over models, length behaviour) for each key of ``prefs``
    (``prefs["longer"]`` must be there); returns ``(per_model, summary, mid_range_models)``."""
    from ...metrics import win_rate

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
            **_length_split(prefs[key], gpt4_pref, prefs["longer"]),
        }
    return per_model, summary, mid


def rows_by_model(rows: Sequence[dict]) -> dict[str, list[int]]:
    """The row indices of each model, in the order the models first appear."""
    by_model: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_model.setdefault(r["model"], []).append(i)
    return by_model
