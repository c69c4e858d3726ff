"""The judge's fidelity to GPT-4, measured, with "longer wins" beside every figure. Used by ``alpaca-farm judge eval``.

Three protocols:

* ``evaluate_lomo``: leave-one-model-out over the GPT-4-annotated models on the 805 eval instructions (the judge has
  seen every instruction, not the model), for the bank heads and the global head;
* ``evaluate_leave_instruction_out``: K folds of eval *instructions*; a fold's instructions give no training pair,
  no synthetic negative and no bank entry, the judge is trained on the rest by the package's own training functions
  and judges them. This is the situation of every RL training prompt (an instruction the judge never saw), so it
  measures the global head;
* ``evaluate_cross_annotation``: the cross-annotation pairs outside the eval set, each judged 8 times by GPT-4,
  against the packaged judges, beside GPT-4's agreement with itself.
"""
from __future__ import annotations

import dataclasses
import os
import time
from itertools import combinations
from typing import Any, Sequence

import numpy as np

from ..utils import stable_hash
from .answer_bank import AnswerBank, BankHeads, fit_bank_head
from .bank_heads import _bank_stats, bank_head_options
from .config import JudgeConfig
from .features import MiniLMEncoder, full_prompt, hand_features
from .heads import feature_scale, fit_bt_head, pair_features
from .training_data import labels, load_training_pairs, with_synthetic

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
    from ..metrics import win_rate

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
    prefs = {"longer": longer_preference(rows)}

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
        bank = AnswerBank(rows, tfidf_bits=config.tfidf_bits)
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
                                             **bank_head_options(config), seed=config.seed * 1000)
            bh = BankHeads(mu=mu, scale=scale, W1=W1[None], b1=b1[None], W2=W2[None], wlin=wlin[None])
            pref[test] = hard(bh.scores(X2[test], 0) - bh.scores(X1[test], 0), test)
        prefs["bank"] = pref
    if "global" in heads:
        encoder = MiniLMEncoder(max_tokens=config.max_tokens)
        syn_model = row_model[n:]
        f1_all, f2_all = pair_features(encoder, all_rows, progress=progress, feature_set=config.global_features)
        f1, f2 = f1_all[:n], f2_all[:n]
        pref = np.full(n, np.nan)
        for m in folds("leave-one-model-out (global head)"):
            test = np.asarray(by_model[m])
            train = np.setdiff1d(np.arange(n), test)
            scale = feature_scale(f1[train], f2[train])
            if config.global_features != "compact":  # (the compact head learns from real pairs only)
                train = np.concatenate([train, n + np.flatnonzero(syn_model != m)]).astype(int)
            w = fit_bt_head((f2_all[train] - f1_all[train]) / scale, y_all[train], config.l2, base_weight[train],
                            max_iter=config.bt_max_iter)
            pref[test] = hard(((f2[test] - f1[test]) / scale) @ w, test)
        prefs["global"] = pref
    prefs["judge"] = prefs[heads[0]]
    keys = ["judge"] + [h for h in heads] + ["longer"]

    per_model, summary, mid = _model_report(by_model, prefs, keys, gpt4_pref)
    target = {m: v["gpt4_win_rate"] for m, v in per_model.items()}
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


# ----------------------------------------------------------------------------------------- unseen instructions
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
    held-out judgments only. Reported as in :func:`evaluate_lomo`, with ``UNSEEN_TARGETS``.
    """
    from .bank_heads import train_bank_heads
    from .heads import train_artifact
    from .judge import DistilledJudge

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
    by_model: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_model.setdefault(r["model"], []).append(i)
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
        train_rows, test_rows = leave_instruction_out_split(rows, k, n_folds)
        if not test_rows or not train_rows:
            raise ValueError(f"fold {k} of {n_folds} has no {'held-out' if not test_rows else 'training'} pairs; "
                             "use fewer folds or more pairs")
        held_out = {prompts[i] for i in test}
        art = train_artifact(fit_config, rows=train_rows, encoder=encoder, progress=False)
        bank = bank_art = None
        if config.bank:
            bank = AnswerBank(train_rows, tfidf_bits=fit_config.tfidf_bits)
            bank_art = train_bank_heads(fit_config, bank, train_rows, progress=False)
        judge = DistilledJudge(config=fit_config, artifact=art, encoder=encoder, bank=bank or False,
                               bank_artifact=bank_art, progress=False)
        anns = judge.compare([r["instruction"] for r in test_rows], [r.get("input", "") or "" for r in test_rows],
                             [r["output_1"] for r in test_rows], [r["output_2"] for r in test_rows])
        prefs["judge"][test] = [a.preference for a in anns]
        scored_by: dict[str, int] = {}
        for a in anns:
            scored_by[a.extra.get("scored_by", "?")] = scored_by.get(a.extra.get("scored_by", "?"), 0) + 1
        train_prompts = {full_prompt(r["instruction"], r.get("input", "") or "") for r in train_rows}
        folds.append({
            "fold": k,
            "n_instructions_held_out": len(held_out),
            "n_pairs_held_out": len(test_rows),
            "n_pairs_train": art.meta["n_pairs"],
            "n_synthetic_train": art.meta["n_synthetic"],
            "held_out_in_training": len(held_out & train_prompts),
            "held_out_in_bank": sum(bank.has(r["instruction"], r.get("input", "")) for r in test_rows) if bank else 0,
            "bank_instructions": len(bank) if bank else 0,
            "scored_by": scored_by,
            "agreement": _agreement(prefs["judge"][test], gpt4_pref[test])[0],
            "longer_agreement": _agreement(prefs["longer"][test], gpt4_pref[test])[0],
            "seconds": round(time.time() - t0, 1),
        })
    keys = ["judge", "longer"]
    per_model, summary, mid = _model_report(by_model, prefs, keys, gpt4_pref)
    mid_idx = np.flatnonzero(np.isin([r["model"] for r in rows], mid))
    gain = _gain_over(prefs["judge"], prefs["longer"], gpt4_pref, prompts)
    gain_mid = _gain_over(prefs["judge"][mid_idx], prefs["longer"][mid_idx], gpt4_pref[mid_idx],
                          [prompts[i] for i in mid_idx])
    targets = {
        "agreement_over_longer": {"value": gain["points"], "se": gain["se"]},
        "agreement_mid_over_longer": {"value": gain_mid["points"], "se": gain_mid["se"]},
        "spearman": {"value": summary["judge"]["spearman"]},
    }
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
        "targets": {k: {**v, "target": UNSEEN_TARGETS[k], "met": bool(v["value"] >= UNSEEN_TARGETS[k])}
                    for k, v in targets.items()},
        "folds": folds,
        "per_model": per_model,
        "seconds": round(time.time() - t_start, 1),
    }


# ----------------------------------------------------------------------------------------- cross-annotation set
CROSS_ANNOTATION_GLOB = "crossannotation_set/gpt4_*_annotations_seed*.json"
DEFAULT_CROSS_ANNOTATION_JUDGES = ("distilled_gpt4", "pooled")


def load_cross_annotations(data_dir: str | os.PathLike | None = None) -> tuple[list[dict], np.ndarray, list[str]]:
    """The AlpacaFarm cross-annotation pairs and GPT-4's labels of them: ``(rows, labels, file names)``.

    The data dir's ``crossannotation_set/gpt4_{b1,b5}_annotations_seed{0..3}.json`` hold the same pairs in the same
    order (checked), each labelled by one GPT-4 configuration and seed: ``labels[i, j]`` is file ``j``'s preference
    for pair ``i`` (1, 2, 1.5, or NaN when unlabelled).
    """
    from ..data import load_annotations_file, resolve_data_dir
    from ..errors import DataFormatError, DataNotFoundError

    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataNotFoundError("the cross-annotation files need a local data dir (set ALPACA_FARM_DATA_DIR or --data-dir)")
    paths = sorted(root.glob(CROSS_ANNOTATION_GLOB))
    if len(paths) < 2:
        raise DataNotFoundError(f"{root / 'crossannotation_set'}: need at least 2 GPT-4 annotation files "
                                f"({CROSS_ANNOTATION_GLOB.split('/')[-1]}), found {len(paths)}")
    files = [load_annotations_file(p) for p in paths]
    fields = ("instruction", "input", "output_1", "output_2")
    for path, f in zip(paths[1:], files[1:]):
        if len(f) != len(files[0]):
            raise DataFormatError(path, f"{len(f)} rows, but {paths[0].name} has {len(files[0])}: not the same pairs")
        for i, (a, b) in enumerate(zip(files[0], f)):
            if any(a[k] != b[k] for k in fields):
                raise DataFormatError(path, f"not the pair of {paths[0].name} at the same row", row=i)
    rows = [{k: r[k] for k in fields} for r in files[0]]
    labels_ = np.asarray([[np.nan if f[i]["preference"] is None else f[i]["preference"] for f in files]
                          for i in range(len(rows))], dtype=np.float64).reshape(len(rows), len(files))
    return rows, labels_, [p.name for p in paths]


def majority_label(labels_: np.ndarray) -> np.ndarray:
    """Per row of ``labels_`` (rows x annotations): 2 if most labels say output_2, 1 if most say output_1, 1.5 on a
    tie or without labels (a draw, which ``_agreement`` excludes from the gold side). Draws count one half."""
    v = np.asarray(labels_, np.float64) - 1.0
    count = np.sum(~np.isnan(v), axis=1)
    total = np.nansum(v, axis=1)
    twice = 2 * total - count  # > 0: output_2 has the majority (exact for labels 0, 1/2, 1)
    return np.where(count == 0, 1.5, np.where(twice > 0, 2.0, np.where(twice < 0, 1.0, 1.5)))


def leave_one_out_majorities(labels_: np.ndarray) -> list[np.ndarray]:
    """``[majority of all annotations but j, for each j]``: the gold a single annotation (or a judge) is compared
    with without counting that annotation in it (with 8 binary labels, 7 never tie)."""
    return [majority_label(np.delete(labels_, j, axis=1)) for j in range(labels_.shape[1])]


def pairwise_agreement(labels_: np.ndarray) -> float:
    """Mean agreement between two annotations of the same pair, over all pairs of annotations (columns)."""
    return float(np.mean([_agreement(labels_[:, a], labels_[:, b])[0]
                          for a, b in combinations(range(labels_.shape[1]), 2)]))


def _cross_report(prefs: dict[str, np.ndarray], labels_: np.ndarray, longer: np.ndarray) -> dict[str, Any]:
    """Agreement of each judge in ``prefs`` with GPT-4's majority (ties excluded), with the leave-one-out majorities
    (mean over annotations j of the majority of the others) and with a single annotation, beside GPT-4's own."""
    maj = majority_label(labels_)
    loo = leave_one_out_majorities(labels_)
    cols = range(labels_.shape[1])
    out: dict[str, Any] = {
        "n_pairs": int(len(labels_)),
        "n_majority_ties": int(np.sum(maj == 1.5)),
        "gpt4_majority_prefers_output_2": _agreement(np.full(len(maj), 2.0), maj)[0],
        "gpt4": {
            "agreement_loo_majority": float(np.mean([_agreement(labels_[:, j], loo[j])[0] for j in cols])),
            "agreement_single": pairwise_agreement(labels_),
            "prefers_longer": float(np.mean([_agreement(labels_[:, j], longer)[0] for j in cols])),
        },
    }
    for key, p in prefs.items():
        out[key] = {
            "agreement_majority": _agreement(p, maj)[0],
            "agreement_loo_majority": float(np.mean([_agreement(p, loo[j])[0] for j in cols])),
            "agreement_single": float(np.mean([_agreement(p, labels_[:, j])[0] for j in cols])),
            "prefers_longer": _agreement(p, longer)[0],
        }
    return out


def _training_info(annotator: Any) -> dict[str, Any] | None:
    """What a distilled judge's global head was trained on (its artifact's meta), for pools too."""
    member = next(iter(annotator.members.values())) if isinstance(getattr(annotator, "members", None), dict) else annotator
    meta = getattr(getattr(member, "artifact", None), "meta", None)
    return {k: meta.get(k) for k in ("n_pairs", "n_synthetic", "models", "source", "built_at")} if meta else None


def evaluate_cross_annotation(
    data_dir: str | os.PathLike | None = None,
    judge: Any = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """The packaged judges on the cross-annotation pairs whose instructions lie outside the eval set (327 of 648),
    against GPT-4's 8 judgments of each (``load_cross_annotations``), with "longer wins" and GPT-4's self-agreement.

    ``judge``: an annotator name (built with ``data_dir`` and ``bank_holdout=True`` where it takes them), an
    annotator instance, or a list of either; default ``distilled_gpt4`` (head 0) and ``pooled`` as users get them.
    Figures per judge: agreement with the majority of the 8 GPT-4 labels (4-4 ties excluded, counted in
    ``n_majority_ties``), the mean agreement with the majority of 7 when each annotation in turn is left out
    (``agreement_loo_majority``: the same gold GPT-4's own single annotations are scored against, so the two compare),
    the mean agreement with a single annotation, and how often it picks the longer output. ``inside_eval`` (the 321
    pairs on eval instructions, judged by the bank heads with each pair's outputs hidden from the bank) is context.
    The outside instructions are checked against the eval set and the judge's training pairs
    (``n_outside_in_training``, 0 when the data dir has the GPT-4 annotation files).
    """
    from ..annotators import ANNOTATORS, make_annotator
    from ..data import load_eval_set, resolve_data_dir
    from ..utils import accepts_kwarg

    t_start = time.time()
    root = resolve_data_dir(data_dir)
    rows, labels_, names = load_cross_annotations(root)
    prompts = [full_prompt(r["instruction"], r["input"]) for r in rows]
    eval_prompts = {full_prompt(r["instruction"], r["input"]) for r in load_eval_set("alpacafarm", root)}
    train_prompts = {full_prompt(r["instruction"], r.get("input", "") or "") for r in load_training_pairs(root)}
    outside = np.asarray([p not in eval_prompts for p in prompts])
    specs = list(DEFAULT_CROSS_ANNOTATION_JUDGES) if judge is None else (
        list(judge) if isinstance(judge, (list, tuple)) else [judge])
    prefs: dict[str, np.ndarray] = {}
    scored_by: dict[str, dict[str, dict[str, int]]] = {}
    judges: dict[str, Any] = {}
    for spec in specs:
        if isinstance(spec, str):
            factory = ANNOTATORS.resolve(spec)
            kwargs = {k: v for k, v in (("data_dir", root), ("bank_holdout", True), ("progress", progress))
                      if accepts_kwarg(factory, k)}
            annotator = make_annotator(spec, **kwargs)
        else:
            annotator = spec
        name = getattr(annotator, "name", None) or str(spec)
        if name in prefs or name == "longer":
            raise ValueError(f"two judges named {name!r} (the 'longer wins' baseline is always reported as 'longer')")
        anns = annotator.compare([r["instruction"] for r in rows], [r["input"] for r in rows],
                                 [r["output_1"] for r in rows], [r["output_2"] for r in rows])
        prefs[name] = np.asarray([np.nan if a.preference is None else a.preference for a in anns], np.float64)
        scored_by[name] = {}
        for subset, mask in (("outside_eval", outside), ("inside_eval", ~outside)):
            counts: dict[str, int] = {}
            for a, m in zip(anns, mask):
                if m and "scored_by" in a.extra:
                    counts[a.extra["scored_by"]] = counts.get(a.extra["scored_by"], 0) + 1
            scored_by[name][subset] = counts
        judges[name] = {"spec": spec if isinstance(spec, str) else type(spec).__name__,
                        "trained_on": _training_info(annotator)}
    prefs["longer"] = longer_preference(rows)
    subsets = {}
    for subset, mask in (("outside_eval", outside), ("inside_eval", ~outside)):
        rep = _cross_report({k: v[mask] for k, v in prefs.items()}, labels_[mask], prefs["longer"][mask])
        for name in judges:
            rep[name]["scored_by"] = scored_by[name][subset]
        subsets[subset] = rep
    maj = majority_label(labels_[outside])
    targets = {}
    for name in judges:  # against GPT-4's majority (ties excluded), paired standard error (one pair per instruction)
        gain = _gain_over(prefs[name][outside], prefs["longer"][outside], maj)
        targets[name] = {"agreement_over_longer": gain["points"], "se": gain["se"],
                         "target": UNSEEN_TARGETS["agreement_over_longer"],
                         "met": bool(gain["points"] >= UNSEEN_TARGETS["agreement_over_longer"])}
    return {
        "protocol": "AlpacaFarm cross-annotation pairs outside the eval set, each judged by GPT-4 8 times "
                    "(configs gpt4_b1 and gpt4_b5, seeds 0-3); majority ties excluded",
        "files": names,
        "n_pairs": len(rows),
        "n_outside_eval": int(outside.sum()),
        "n_outside_in_training": int(sum(p in train_prompts for p, o in zip(prompts, outside) if o)),
        "judges": judges,
        "subsets": subsets,
        "targets": targets,
        "seconds": round(time.time() - t_start, 1),
    }
