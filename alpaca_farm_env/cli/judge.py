"""``alpaca-farm judge``: build (``train``) and measure (``eval``) the offline judge distilled from GPT-4 judgments."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    from . import add_data_dir_arg

    p = sub.add_parser("judge", help="train / evaluate the offline distilled GPT-4 judge (distilled_gpt4, pooled)")
    jsub = p.add_subparsers(dest="judge_command", metavar="ACTION")

    t = jsub.add_parser("train", help="build the judge artifact and cache it under the user's cache dir")
    add_data_dir_arg(t)
    t.add_argument("--variant", default="fast", choices=["fast", "best"],
                   help="fast: Bradley-Terry head over frozen MiniLM + hand features (default, seconds to use); "
                        "best: fine-tuned MiniLM cross-encoder (hours of CPU; resumes from its checkpoint if killed)")
    t.add_argument("--models", nargs="*", default=None, help="train on these annotated models only (default: all)")
    t.add_argument("--max-pairs", type=int, default=None, help="at most this many pairs per model")
    t.add_argument("--force", action="store_true", help="retrain even if a cached artifact exists")
    t.add_argument("--max-steps", type=int, default=None, help="best: training steps of 16 pairs (default 2000)")
    t.add_argument("--max-length", type=int, default=None, help="best: word pieces of (prompt, output) (default 192)")
    t.add_argument("--minutes", type=float, default=None,
                   help="best: stop training after this much wall clock and cache what was reached")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run_train)

    e = jsub.add_parser("eval", help="leave-one-model-out agreement, win-rate MAE and Spearman vs GPT-4")
    add_data_dir_arg(e)
    e.add_argument("--models", nargs="*", default=None, help="evaluate over these annotated models (default: all)")
    e.add_argument("--max-pairs", type=int, default=None, help="at most this many pairs per model")
    e.add_argument("--heads", default="bank,global",
                   help="comma-separated: bank (answer-bank heads: how the judge scores the eval instructions), "
                        "global (global head: any other instruction; embeds every output once, ~15 min cold)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=run_eval)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _config(args):
    from ..judge.config import JudgeConfig

    return JudgeConfig(variant="fast", models=tuple(args.models) if args.models else None,
                       max_pairs_per_model=args.max_pairs)


def _best_config(args):
    from ..judge.cross_encoder import CrossEncoderConfig

    kw = {k: v for k, v in (("max_steps", args.max_steps), ("max_length", args.max_length)) if v is not None}
    return CrossEncoderConfig(models=tuple(args.models) if args.models else None, max_pairs_per_model=args.max_pairs,
                              seed=args.seed, **kw)


def run_train(args) -> int:
    from ..judge.heads import get_artifact

    if args.variant == "best":
        from ..judge.cross_encoder import get_best_model

        budget = None if args.minutes is None else 60 * args.minutes
        model = get_best_model(_best_config(args), args.data_dir, retrain=args.force, progress=True,
                               time_budget_s=budget)
        m = model.meta
        print(f"best judge artifact: {model.folder}")
        print(f"  {m['n_pairs']} GPT-4-labelled pairs from {len(m['models'])} models; {m['steps']} steps"
              f"{' (stopped by --minutes)' if m['stopped_early'] else ''}; {model.heads.shape[0]} heads "
              f"(1 full + {model.heads.shape[0] - 1} bootstrap pool members); built {m['built_at']}")
        return 0

    art, path = get_artifact(_config(args), args.data_dir, retrain=args.force, progress=True)
    m = art.meta
    print(f"judge artifact: {path}")
    print(f"  {m.get('n_pairs')} GPT-4-labelled pairs from {len(m.get('models', []))} models; "
          f"{art.heads.shape[0]} heads (1 full + {art.heads.shape[0] - 1} bootstrap pool members); "
          f"built {m.get('built_at')} in {m.get('train_seconds')} s")
    from ..judge.bank_heads import get_bank_heads, load_bank

    config = _config(args)
    bank = load_bank(args.data_dir, config.models, config.max_pairs_per_model)
    if bank is None:
        print("answer bank: none (no GPT-4 annotation files in the data dir); the global head judges every instruction")
        return 0
    bart, bpath = get_bank_heads(config, bank, retrain=args.force, progress=True)
    bm = bart.meta
    print(f"bank heads: {bpath}")
    print(f"  answer bank: {bm['bank_entries']} labelled answers (references included) on {bm['bank_instructions']} "
          f"instructions; {bart.heads.W1.shape[0]} heads trained on {bm['n_pairs']} pairs + {bm['n_synthetic']} "
          f"synthetic negatives in {bm['train_seconds']} s")
    return 0


def run_eval(args) -> int:
    from ..judge.config import JudgeConfig
    from ..judge.evaluation import evaluate_lomo

    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    res = evaluate_lomo(args.data_dir, JudgeConfig(), models=args.models or None, max_pairs_per_model=args.max_pairs,
                        heads=heads, progress=not args.json)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['protocol']}: {len(res['models'])} models, {res['n_pairs']} pairs")
    keys = list(res["heads"]) + ["longer"]
    print(f"{'model':<24} {'GPT-4':>6} " + " ".join(f"{k:>7} {'cal':>5}" for k in keys) + " "
          + " ".join(f"{k[:6] + '.agr':>11}" for k in keys))
    for m, v in sorted(res["per_model"].items(), key=lambda kv: -kv[1]["gpt4_win_rate"]):
        print(f"{m:<24} {v['gpt4_win_rate']:6.1f} "
              + " ".join(f"{v[k + '_win_rate']:7.1f} {v[k + '_calibrated_win_rate']:5.1f}" for k in keys) + " "
              + " ".join(f"{100 * v[k + '_agreement']:11.1f}" for k in keys))
    s = res["summary"]
    labels = {"bank": "distilled_gpt4, bank", "global": "distilled_gpt4, global", "longer": "longer wins"}
    print()
    print(f"{'(leave-one-model-out)':<24} {'agree%':>7} {'agree% [20,60]':>15} {'MAE':>6} {'Spearman':>9} {'MAE cal':>8} {'Sp. cal':>8}")
    for key in keys:
        v = s[key]
        print(f"{labels[key]:<24} {100 * v['agreement']:7.1f} {100 * v['agreement_mid']:15.1f} {v['mae']:6.1f} "
              f"{v['spearman']:9.2f} {v['mae_calibrated']:8.1f} {v['spearman_calibrated']:8.2f}")
    print(f"[20,60] models: {', '.join(res['mid_range_models']) or '(none)'}; 'cal' = line from logit(predicted) to "
          "logit(GPT-4 win-rate) fitted on the other models (cross-fitted)")
    return 0
