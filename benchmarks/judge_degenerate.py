"""Degenerate responses against the reference: how often the judge prefers the reference (``judge/degenerate.py``).

For prompts of a training split (the env's RL prompts, scored by the global head) and of the eval split (scored by
the bank heads), every kind of the held-out degenerate suite -- blank, punctuation, filler sentences and bullets,
repeated phrases, looped sentences, empty / placeholder bullets, markdown skeletons, lorem ipsum, gibberish, prompt
and chat-template echoes, keyword stuffing, off-topic answers, truncated and padded references, word salad -- is
judged against the split's reference output as the env's ``annotator`` reward judges a response. Prints the loss
rate per kind and split (draws count 1/2; target >= 97%) and the time taken.

    python benchmarks/judge_degenerate.py [--annotator pooled] [--n-prompts 128] [--reference alpacafarm] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--annotator", default="pooled", help="annotator name (default: pooled, the noise-free pool)")
    ap.add_argument("--n-prompts", type=int, default=128, help="prompts per split")
    ap.add_argument("--splits", default="unlabeled,eval", help="comma-separated env splits")
    ap.add_argument("--reference", default="alpacafarm", choices=["alpacafarm", "alpacaeval1"],
                    help="the eval split's Davinci003 reference (the env's default: alpacafarm)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the full result here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from alpaca_farm_env.annotators import make_annotator
    from alpaca_farm_env.judge.degenerate import evaluate_degenerate, format_table

    t0 = time.time()
    judge = make_annotator(args.annotator, data_dir=args.data_dir)
    build_s = time.time() - t0
    res = evaluate_degenerate(args.data_dir, judge, n_prompts=args.n_prompts,
                              splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()), seed=args.seed,
                              reference=args.reference)
    res["annotator"] = args.annotator
    print(format_table(res))
    print(f"meets the target on every split: {res['meets_target']}")
    print(f"building {args.annotator}: {build_s:.1f} s; "
          + "; ".join(f"{s}: {v['n_pairs']} pairs in {v['seconds']:.1f} s" for s, v in res["splits"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
