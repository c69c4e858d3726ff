"""Leave-one-model-out: the judge rebuilt without each GPT-4-annotated model judges that model's pairs on the 805
eval instructions (it has seen every instruction, not the model)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..answer_bank import AnswerBank, BankHeads, fit_bank_head
from ..bank_heads import _bank_stats, bank_head_options
from ..config import JudgeConfig
from ..features import MiniLMEncoder, full_prompt, hand_features
from ..heads import feature_scale, fit_bt_head, pair_features
from ..training_data import labels, load_training_pairs, with_synthetic
from .scoring import _fit_line, _logit, _model_report, longer_preference, rows_by_model


@dataclass
class _LomoData:
    """The annotated pairs (``rows``, judged) followed by the synthetic negatives (in ``all_rows`` only: they enter
    the training folds of every model but their own, and are never judged)."""

    rows: list[dict]
    all_rows: list[dict]
    base_weight: np.ndarray  # training weight of each row of all_rows
    row_model: np.ndarray  # model of each row of all_rows
    y_all: np.ndarray  # Bradley-Terry target of each row of all_rows
    same: np.ndarray  # per judged row: output_1 == output_2 (a draw, whatever the scores)
    by_model: dict[str, list[int]]
    progress: bool

    @property
    def n(self) -> int:
        return len(self.rows)

    def folds(self, desc: str) -> Iterable[str]:
        """The held-out models, one fold each (with a progress bar when asked)."""
        it = list(self.by_model)
        if self.progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=desc, unit="model")
        return it

    def hard(self, diff: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Hard preferences (2, 1, 1.5 on a tie) of score differences s(o2) - s(o1) of rows ``idx``."""
        diff = np.where(self.same[idx], 0.0, diff)
        return np.where(diff > 0, 2.0, np.where(diff < 0, 1.0, 1.5))


def _bank_head_prefs(d: _LomoData, config: JudgeConfig) -> np.ndarray:
    """Each model's pairs judged by bank heads fitted without that model, its answers hidden from the bank too."""
    bank = AnswerBank(d.rows, tfidf_bits=config.tfidf_bits)
    ins = [r["instruction"] for r in d.all_rows]
    inp = [r.get("input", "") or "" for r in d.all_rows]
    q1 = bank.query(ins, inp, [r["output_1"] for r in d.all_rows])  # similarities once; exclusions per fold
    q2 = bank.query(ins, inp, [r["output_2"] for r in d.all_rows])
    prompts = [full_prompt(i, x) for i, x in zip(ins, inp)]
    H1 = np.stack([hand_features(p_, r["output_1"]) for p_, r in zip(prompts, d.all_rows)])
    H2 = np.stack([hand_features(p_, r["output_2"]) for p_, r in zip(prompts, d.all_rows)])
    pref = np.full(d.n, np.nan)
    for m in d.folds("leave-one-model-out (bank heads)"):
        exclude = [(r["model"], m) for r in d.all_rows]
        X1 = np.concatenate([H1, bank.features(q1, exclude)], axis=1)
        X2 = np.concatenate([H2, bank.features(q2, exclude)], axis=1)
        test = np.asarray(d.by_model[m])
        train = np.flatnonzero(d.row_model != m)
        real_train = train[train < d.n]
        mu, scale = _bank_stats(X1[real_train], X2[real_train])
        W1, b1, W2, wlin = fit_bank_head(X1[train], X2[train], d.y_all[train], d.base_weight[train], mu, scale,
                                         **bank_head_options(config), seed=config.seed * 1000)
        bh = BankHeads(mu=mu, scale=scale, W1=W1[None], b1=b1[None], W2=W2[None], wlin=wlin[None])
        pref[test] = d.hard(bh.scores(X2[test], 0) - bh.scores(X1[test], 0), test)
    return pref


def _global_head_prefs(d: _LomoData, config: JudgeConfig) -> np.ndarray:
    """Each model's pairs judged by a global head fitted without that model."""
    n = d.n
    encoder = MiniLMEncoder(max_tokens=config.max_tokens)
    syn_model = d.row_model[n:]
    f1_all, f2_all = pair_features(encoder, d.all_rows, progress=d.progress, feature_set=config.global_features)
    f1, f2 = f1_all[:n], f2_all[:n]
    pref = np.full(n, np.nan)
    for m in d.folds("leave-one-model-out (global head)"):
        test = np.asarray(d.by_model[m])
        train = np.setdiff1d(np.arange(n), test)
        scale = feature_scale(f1[train], f2[train])
        if config.global_features != "compact":  # (the compact head learns from real pairs only)
            train = np.concatenate([train, n + np.flatnonzero(syn_model != m)]).astype(int)
        w = fit_bt_head((f2_all[train] - f1_all[train]) / scale, d.y_all[train], config.l2, d.base_weight[train],
                        max_iter=config.bt_max_iter)
        pref[test] = d.hard(((f2[test] - f1[test]) / scale) @ w, test)
    return pref


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

    Returns ``{"protocol", "config", "heads", "n_pairs", "n_synthetic", "models", "mid_range_models", "summary"
    (per key: agreement, MAE, Spearman, length behaviour), "per_model", "calibration_logit_line_all_models"}``.
    """

    heads = tuple(heads)
    if not heads or set(heads) - {"bank", "global"}:
        raise ValueError(f"heads must be a non-empty subset of ('bank', 'global'), got {heads!r}")
    config = config or JudgeConfig()
    models = list(models) if models is not None else list(config.models or []) or None
    rows = load_training_pairs(data_dir, models, max_pairs_per_model or config.max_pairs_per_model)
    by_model = rows_by_model(rows)
    if len(by_model) < 2:
        raise ValueError("leave-one-model-out evaluation needs GPT-4 annotations of at least 2 models")
    # synthetic negatives enter training folds only: built per model, dropped with the held-out model, never judged
    all_rows, base_weight = with_synthetic(rows, config)
    d = _LomoData(rows=rows, all_rows=all_rows, base_weight=base_weight,
                  row_model=np.asarray([r["model"] for r in all_rows], dtype=object), y_all=labels(all_rows),
                  same=np.asarray([r["output_1"] == r["output_2"] for r in rows]), by_model=by_model,
                  progress=progress)
    gpt4_pref = np.asarray([float(r["preference"]) for r in rows])
    prefs = {"longer": longer_preference(rows)}
    if "bank" in heads:
        prefs["bank"] = _bank_head_prefs(d, config)
    if "global" in heads:
        prefs["global"] = _global_head_prefs(d, config)
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
