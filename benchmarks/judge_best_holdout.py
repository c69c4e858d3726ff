"""Held-out-models fidelity of the ``best`` distilled judge vs the ``fast`` one and "longer wins" (2 CPU threads).

Protocol (full leave-one-model-out is out of reach for a fine-tuned encoder on 2 cores): the models in HELD_OUT
(GPT-4 win-rates from ~27 to ~92, incl. the weak phi-2 / falcon-40b-instruct and the verbose llama-2-7b-chat-hf) are
never trained on. The best judge fine-tunes on the other annotated models for ``--train-minutes`` of wall clock
(checkpointed: rerunning resumes), the fast judge is fitted on the same training models, and both judge all 805
pairs of each held-out model. Calibration: the fast judge's logit line is fitted on the *training* models' LOMO
(out-of-sample) win-rates and applied to the held-out models; the best judge has no out-of-sample predictions for
its training models, so it is reported uncalibrated only.

    python benchmarks/judge_best_holdout.py --train-minutes 25 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

HELD_OUT = ("phi-2", "falcon-40b-instruct", "llama-2-7b-chat-hf", "gpt35_turbo_instruct", "claude")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-minutes", type=float, default=25.0)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--max-steps", type=int, default=2000)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--skip-fast-lomo", action="store_true", help="no calibration line for the fast judge")
    args = ap.parse_args()

    import torch
    from scipy.stats import spearmanr

    torch.set_num_threads(2)
    from alpaca_farm_env.judge import evaluation as E
    from alpaca_farm_env.judge.config import JudgeConfig
    from alpaca_farm_env.judge.heads import get_artifact
    from alpaca_farm_env.judge.judge import DistilledJudge
    from alpaca_farm_env.judge.training_data import load_training_pairs
    from alpaca_farm_env.data import list_annotated_models, resolve_data_dir
    from alpaca_farm_env.judge.cross_encoder import CrossEncoderConfig, get_best_model
    from alpaca_farm_env.metrics import win_rate

    root = resolve_data_dir(args.data_dir)
    train_models = tuple(m for m in list_annotated_models(root) if m not in HELD_OUT)
    t0 = time.time()
    cfg = CrossEncoderConfig(models=train_models, max_length=args.max_length, max_steps=args.max_steps)
    best = get_best_model(cfg, root, time_budget_s=60 * args.train_minutes, checkpoint_every=25)
    t_train = time.time() - t0
    print(f"best judge: {best.meta['steps']} steps x {cfg.batch_pairs} pairs on {len(train_models)} models "
          f"({best.meta['n_pairs']} pairs), {t_train:.0f} s this run; artifact {best.folder}", flush=True)

    test = load_training_pairs(root, HELD_OUT)
    ins, inp = [r["instruction"] for r in test], [r["input"] for r in test]
    o1, o2 = [r["output_1"] for r in test], [r["output_2"] for r in test]
    n = len(test)
    same = np.asarray([a == b for a, b in zip(o1, o2)])

    def prefs(s: np.ndarray) -> np.ndarray:
        diff = np.where(same, 0.0, s[n:] - s[:n])
        return np.where(diff > 0, 2.0, np.where(diff < 0, 1.0, 1.5))

    t1 = time.time()
    s_best = best.scores(ins * 2, inp * 2, o1 + o2, progress=True)
    t_score = time.time() - t1
    fast_cfg = JudgeConfig(models=train_models)
    fast_art, _ = get_artifact(fast_cfg, root, progress=True)
    fast = DistilledJudge(config=fast_cfg, artifact=fast_art, progress=True)
    s_fast = fast.scores(ins * 2, inp * 2, o1 + o2)
    l1, l2 = np.asarray([len(x) for x in o1]), np.asarray([len(x) for x in o2])
    judges = {"best": prefs(s_best), "fast": prefs(s_fast),
              "longer": np.where(l2 > l1, 2.0, np.where(l2 < l1, 1.0, 1.5))}
    gpt4 = np.asarray([float(r["preference"]) for r in test])
    model = np.asarray([r["model"] for r in test])

    line = None
    if not args.skip_fast_lomo:  # fast judge's out-of-sample win-rates on the training models -> logit line
        lomo = E.evaluate_lomo(root, fast_cfg, models=train_models, progress=True)
        pm = lomo["per_model"]
        line = E._fit_line(E._logit([pm[m]["judge_win_rate"] for m in pm]), E._logit([pm[m]["gpt4_win_rate"] for m in pm]))

    per_model = {}
    for m in HELD_OUT:
        i = model == m
        per_model[m] = {"gpt4": win_rate(gpt4[i])["win_rate"],
                        **{k: win_rate(p[i])["win_rate"] for k, p in judges.items()},
                        **{f"{k}_agree": E._agreement(p[i], gpt4[i])[0] for k, p in judges.items()}}
        if line is not None:
            z = line[0] * E._logit([per_model[m]["fast"]])[0] + line[1]
            per_model[m]["fast_cal"] = float(100 / (1 + np.exp(-z)))
    mid = np.isin(model, [m for m in HELD_OUT if E.MID_RANGE[0] <= per_model[m]["gpt4"] <= E.MID_RANGE[1]])
    g = np.asarray([per_model[m]["gpt4"] for m in HELD_OUT])
    summary = {}
    for k in list(judges) + (["fast_cal"] if line is not None else []):
        wr = np.asarray([per_model[m][k] for m in HELD_OUT])
        p = judges[k.replace("_cal", "")]
        summary[k] = {"agreement": E._agreement(p, gpt4)[0], "agreement_mid": E._agreement(p[mid], gpt4[mid])[0],
                      "mae": float(np.mean(np.abs(wr - g))), "spearman": float(spearmanr(wr, g).statistic)}

    print(f"\nheld-out models ({n} pairs); scoring {2 * n} outputs with the best judge took {t_score:.0f} s")
    print(f"{'model':<22} {'GPT-4':>6} {'best':>6} {'fast':>6} {'f.cal':>6} {'longer':>6} "
          f"{'b.agr':>6} {'f.agr':>6} {'l.agr':>6}")
    for m in HELD_OUT:
        v = per_model[m]
        print(f"{m:<22} {v['gpt4']:6.1f} {v['best']:6.1f} {v['fast']:6.1f} {v.get('fast_cal', float('nan')):6.1f} "
              f"{v['longer']:6.1f} {100 * v['best_agree']:6.1f} {100 * v['fast_agree']:6.1f} {100 * v['longer_agree']:6.1f}")
    print(f"\n{'judge':<10} {'agree%':>7} {'agree% [20,60]':>15} {'MAE':>6} {'Spearman':>9}")
    for k, v in summary.items():
        print(f"{k:<10} {100 * v['agreement']:7.1f} {100 * v['agreement_mid']:15.1f} {v['mae']:6.1f} {v['spearman']:9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"held_out": HELD_OUT, "train_models": train_models, "best_meta": best.meta,
                       "score_seconds": t_score, "per_model": per_model, "summary": summary,
                       "fast_cal_line": line}, f, indent=2)


if __name__ == "__main__":
    main()
