"""The offline judge on models it never saw a GPT-4 label for: the data dir's held-back models.

The data dir ships model outputs, but *not* the GPT-4 annotation files, of a set of real models (alpaca-7b,
alpaca-farm-ppo-human, text_davinci_001, vicuna-13b, zephyr-7b-beta, claude-2, ...); their AlpacaEval-1 GPT-4
win-rates are only in ``leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv``. Nothing of the judge is
trained or tuned on them, so this is an independent check of what ``judge eval`` (leave-one-model-out) reports.

Each model's outputs are judged against the AlpacaEval-1 reference (B) (``--reference alpacafarm``: the AlpacaFarm
reference (A), another davinci003 sample that is not in the answer bank) with the ``pooled`` annotator (the
evaluation default; answer bank on, as for any evaluation on the 805 instructions), optionally with the global head
only (``--global-head``), and with "longer wins"; win-rates use ``metrics.win_rate``. It also times building the
judge and scoring the first model's 805 pairs (2 CPU threads).

    python benchmarks/judge_external.py [--global-head] [--json out.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import time

import numpy as np

EXTERNAL = (
    "text_davinci_001", "oasst-sft-pythia-12b", "alpaca-7b", "pythia-12b-mix-sft", "alpaca-farm-ppo-human",
    "alpaca-farm-ppo-sim-gpt4-20k", "guanaco-7b", "oasst-sft-llama-33b", "baize-v2-7b", "vicuna-7b", "vicuna-13b",
    "zephyr-7b-beta", "claude-2",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--global-head", action="store_true", help="also judge with the global head only (bank off)")
    ap.add_argument("--reference", default="alpacaeval1", choices=["alpacaeval1", "alpacafarm"],
                    help="Davinci003 reference to judge against: (B) alpacaeval1, as GPT-4's leaderboard did (default), "
                         "or (A) alpacafarm, the benchmark's default (a different davinci003 sample, not in the bank)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import torch
    from scipy.stats import spearmanr

    torch.set_num_threads(2)
    from alpaca_farm_env.annotators import make_annotator
    from alpaca_farm_env.benchmark.evaluation import annotate_pairs, match_outputs
    from alpaca_farm_env.data import list_annotated_models, load_eval_set, load_model_outputs, resolve_data_dir
    from alpaca_farm_env.metrics import win_rate

    root = resolve_data_dir(args.data_dir)
    if root is None:
        raise SystemExit("needs a local data dir (--data-dir or $ALPACA_FARM_DATA_DIR)")
    leaked = sorted(set(EXTERNAL) & set(list_annotated_models(root)))
    if leaked:
        raise SystemExit(f"{leaked} have GPT-4 annotation files in {root}: not an external check")
    board = {r[""]: float(r["win_rate"])
             for r in csv.DictReader(open(root / "leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv"))}
    eval_rows = load_eval_set(args.reference, root)

    judges = {}
    t0 = time.time()
    judges["pooled"] = make_annotator("pooled", data_dir=root, progress=True)
    build_s = time.time() - t0
    if args.global_head:
        judges["pooled_global"] = make_annotator("pooled", data_dir=root, bank=False, progress=True)
    judges["longer"] = make_annotator("longer")

    results: dict[str, dict] = {}
    first_model_s = None
    for m in EXTERNAL:
        pairs = match_outputs(load_model_outputs(m, root), eval_rows).pairs
        results[m] = {"gpt4_leaderboard": board[m], "n": len(pairs)}
        for name, judge in judges.items():
            t = time.time()
            rows, _ = annotate_pairs(judge, pairs, progress=False, chunk_size=256)
            if name == "pooled" and first_model_s is None:
                first_model_s = time.time() - t
            results[m][name] = win_rate([r["preference"] for r in rows])["win_rate"]
        print(m, {k: round(v, 1) if isinstance(v, float) else v for k, v in results[m].items()}, flush=True)

    gpt4 = np.asarray([results[m]["gpt4_leaderboard"] for m in EXTERNAL])
    summary = {}
    for name in judges:
        pred = np.asarray([results[m][name] for m in EXTERNAL])
        summary[name] = {"mae": float(np.mean(np.abs(pred - gpt4))), "spearman": float(spearmanr(pred, gpt4).statistic),
                         "mean_signed_error": float(np.mean(pred - gpt4))}
    print(f"\n{'model':<30} {'GPT-4':>6} " + " ".join(f"{n:>14}" for n in judges))
    for m in EXTERNAL:
        print(f"{m:<30} {results[m]['gpt4_leaderboard']:6.1f} " + " ".join(f"{results[m][n]:14.1f}" for n in judges))
    for name, s in summary.items():
        print(f"{name:<14} MAE {s['mae']:5.1f}  Spearman {s['spearman']:.2f}  mean signed error {s['mean_signed_error']:+.1f}")
    print(f"building pooled: {build_s:.1f} s; scoring the first model's {results[EXTERNAL[0]]['n']} pairs: {first_model_s:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "summary": summary, "build_seconds": build_s,
                       "first_model_seconds": first_model_s}, f, indent=2)


if __name__ == "__main__":
    main()
