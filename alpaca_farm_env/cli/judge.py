"""``alpaca-farm judge``: build (``train``) and measure (``eval``) the offline judge distilled from GPT-4 judgments."""
from __future__ import annotations

import json

from ..errors import ConfigError


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

    e = jsub.add_parser("eval", help="fidelity to GPT-4: agreement, win-rate MAE and Spearman, with 'longer wins' beside")
    add_data_dir_arg(e)
    e.add_argument("--protocol", default="lomo", choices=["lomo", "lio", "crossannotation", "degenerate", "fuzz"],
                   help="lomo: leave-one-model-out on the eval instructions (default); lio: leave-instruction-out "
                        "folds, the judge on instructions it never saw (as on RL training prompts); crossannotation: "
                        "the packaged judges on the cross-annotation pairs outside the eval set, 8 GPT-4 labels each; "
                        "degenerate: how often content-free, repetitive, off-topic, echoed, truncated and padded "
                        "responses (a suite kept apart from the judge's training) lose to the split's reference; "
                        "fuzz: junk drawn from the fuzzer's families (judge/fuzz.py) against the reference, for the "
                        "noise-free pool, each of its members and noisy_pooled")
    e.add_argument("--models", nargs="*", default=None, help="lomo/lio: over these annotated models (default: all)")
    e.add_argument("--max-pairs", type=int, default=None, help="lomo/lio: at most this many pairs per model")
    e.add_argument("--heads", default="bank,global",
                   help="lomo: comma-separated: bank (answer-bank heads: how the judge scores the eval instructions), "
                        "global (global head: any other instruction; embeds every output once, ~15 min cold)")
    e.add_argument("--folds", type=int, default=5, help="lio: number of instruction folds (default 5)")
    e.add_argument("--annotators", default=",".join(("distilled_gpt4", "pooled")),
                   help="crossannotation: comma-separated annotator names (default: distilled_gpt4,pooled)")
    e.add_argument("--annotator", default="pooled",
                   help="degenerate: the annotator judged (default: the noise-free pool, as the env's reward)")
    e.add_argument("--prompts", type=int, default=128, help="degenerate/fuzz: prompts per split (default 128)")
    e.add_argument("--splits", default="unlabeled,eval",
                   help="degenerate/fuzz: comma-separated splits whose prompts and references are used (default: "
                        "unlabeled,eval: training prompts, judged by the global head, and eval prompts)")
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
    bank = load_bank(args.data_dir, config.models, config.max_pairs_per_model, config.tfidf_bits)
    if bank is None:
        print("answer bank: none (no GPT-4 annotation files in the data dir); the global head judges every instruction")
        return 0
    from ..judge.config import data_fingerprint

    bart, bpath = get_bank_heads(config, bank, data_fingerprint(args.data_dir, config.models), retrain=args.force,
                                 progress=True)
    bm = bart.meta
    print(f"bank heads: {bpath}")
    print(f"  answer bank: {bm['bank_entries']} labelled answers (references included) on {bm['bank_instructions']} "
          f"instructions; {bart.heads.W1.shape[0]} heads trained on {bm['n_pairs']} pairs + {bm['n_synthetic']} "
          f"synthetic negatives in {bm['train_seconds']} s")
    return 0


def run_eval(args) -> int:
    from ..utils import json_safe

    if args.protocol == "lio":
        from ..judge.evaluation import evaluate_leave_instruction_out

        res = evaluate_leave_instruction_out(args.data_dir, _config(args), n_folds=args.folds, progress=not args.json)
        printer = _print_lio
    elif args.protocol == "crossannotation":
        from ..judge.evaluation import evaluate_cross_annotation

        names = [a.strip() for a in args.annotators.split(",") if a.strip()]
        res = evaluate_cross_annotation(args.data_dir, names, progress=not args.json)
        printer = _print_crossannotation
    elif args.protocol == "degenerate":
        from ..judge.degenerate import evaluate_degenerate, format_table

        if args.prompts < 1:
            raise ConfigError(f"--prompts must be at least 1, got {args.prompts}")
        splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
        res = evaluate_degenerate(args.data_dir, args.annotator, n_prompts=args.prompts, splits=splits)
        printer = lambda r: print(format_table(r) + f"\ntarget met on every split: {r['meets_target']}")  # noqa: E731
    elif args.protocol == "fuzz":
        from ..judge.fuzz import evaluate_fuzz, format_fuzz_table

        if args.prompts < 1:
            raise ConfigError(f"--prompts must be at least 1, got {args.prompts}")
        splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
        res = evaluate_fuzz(args.data_dir, n_prompts=args.prompts, splits=splits)
        printer = lambda r: print(format_fuzz_table(r) + f"target met: {r['meets_target']}")  # noqa: E731
    else:
        from ..judge.config import JudgeConfig
        from ..judge.evaluation import evaluate_lomo

        heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
        res = evaluate_lomo(args.data_dir, JudgeConfig(), models=args.models or None,
                            max_pairs_per_model=args.max_pairs, heads=heads, progress=not args.json)
        printer = _print_lomo
    if args.json:
        print(json.dumps(json_safe(res), indent=2))
    else:
        printer(res)
    return 0


_LABELS = {"bank": "distilled_gpt4, bank", "global": "distilled_gpt4, global", "judge": "distilled_gpt4 (global)",
           "longer": "longer wins"}


def _print_per_model(res, keys) -> None:
    print(f"{'model':<24} {'GPT-4':>6} " + " ".join(f"{k:>7} {'cal':>5}" for k in keys) + " "
          + " ".join(f"{k[:6] + '.agr':>11}" for k in keys))
    for m, v in sorted(res["per_model"].items(), key=lambda kv: -kv[1]["gpt4_win_rate"]):
        print(f"{m:<24} {v['gpt4_win_rate']:6.1f} "
              + " ".join(f"{v[k + '_win_rate']:7.1f} {v[k + '_calibrated_win_rate']:5.1f}" for k in keys) + " "
              + " ".join(f"{100 * v[k + '_agreement']:11.1f}" for k in keys))


def _print_summary(res, keys, title) -> None:
    s = res["summary"]
    print(f"{title:<24} {'agree%':>7} {'agree% [20,60]':>15} {'MAE':>6} {'Spearman':>9} {'MAE cal':>8} {'Sp. cal':>8} "
          f"{'longer%':>8}")
    for key in keys:
        v = s[key]
        print(f"{_LABELS[key]:<24} {100 * v['agreement']:7.1f} {100 * v['agreement_mid']:15.1f} {v['mae']:6.1f} "
              f"{v['spearman']:9.2f} {v['mae_calibrated']:8.1f} {v['spearman_calibrated']:8.2f} "
              f"{100 * v['prefers_longer']:8.1f}")
    print(f"[20,60] models: {', '.join(res['mid_range_models']) or '(none)'}; 'cal' = line from logit(predicted) to "
          "logit(GPT-4 win-rate) fitted on the other models (cross-fitted); longer% = how often it picks the longer "
          "output")


def _print_lomo(res) -> None:
    print(f"{res['protocol']}: {len(res['models'])} models, {res['n_pairs']} pairs")
    keys = list(res["heads"]) + ["longer"]
    _print_per_model(res, keys)
    print()
    _print_summary(res, keys, "(leave-one-model-out)")


def _print_lio(res) -> None:
    print(f"{res['protocol']}: {len(res['models'])} models, {res['n_instructions']} instructions, {res['n_pairs']} "
          f"pairs, {res['seconds']:.0f} s")
    keys = ["judge", "longer"]
    _print_per_model(res, keys)
    print()
    print(f"{'fold':>4} {'instr.':>7} {'held-out':>9} {'train':>7} {'synth.':>7} {'in train/bank':>14} {'scored by':>16} "
          f"{'agree%':>7} {'lng.agr%':>8} {'s':>6}")
    for f in res["folds"]:
        by = ", ".join(f"{k} {v}" for k, v in sorted(f["scored_by"].items()))
        print(f"{f['fold']:>4} {f['n_instructions_held_out']:>7} {f['n_pairs_held_out']:>9} {f['n_pairs_train']:>7} "
              f"{f['n_synthetic_train']:>7} {f['held_out_in_training']:>6}/{f['held_out_in_bank']:<7} {by:>16} "
              f"{100 * f['agreement']:7.1f} {100 * f['longer_agreement']:8.1f} {f['seconds']:6.0f}")
    print()
    _print_summary(res, keys, "(leave-instruction-out)")
    print(f"GPT-4 picks the longer output in {100 * res['gpt4_prefers_longer']:.1f}% of the pairs")
    for name, t in res["targets"].items():
        se = f" +- {t['se']:.2f} (s.e., paired, clustered by instruction)" if "se" in t else ""
        print(f"target {name}: {t['value']:.2f}{se} (>= {t['target']}): {'met' if t['met'] else 'NOT met'}")


def _print_crossannotation(res) -> None:
    print(f"{res['protocol']}: {res['n_outside_eval']} of {res['n_pairs']} pairs outside the eval set "
          f"({res['n_outside_in_training']} of their instructions in the judges' training pairs); {res['seconds']:.0f} s")
    print(f"GPT-4 files: {', '.join(res['files'])}")
    for subset, title in (("outside_eval", "outside the eval set (global head)"),
                          ("inside_eval", "on eval instructions (bank heads, pair's outputs hidden; context)")):
        r = res["subsets"][subset]
        print()
        print(f"{r['n_pairs']} pairs {title}; {r['n_majority_ties']} majority ties (4-4) excluded from 'vs majority'")
        print(f"{'judge':<24} {'vs majority%':>13} {'vs LOO maj. of 7%':>18} {'vs single%':>11} {'longer%':>8}  scored by")
        g = r["gpt4"]
        print(f"{'GPT-4 (one annotation)':<24} {'':>13} {100 * g['agreement_loo_majority']:18.1f} "
              f"{100 * g['agreement_single']:11.1f} {100 * g['prefers_longer']:8.1f}")
        for name in list(res["judges"]) + ["longer"]:
            v = r[name]
            by = ", ".join(f"{k} {n}" for k, n in sorted(v.get("scored_by", {}).items()))
            print(f"{_LABELS.get(name, name) if name == 'longer' else name:<24} {100 * v['agreement_majority']:13.1f} "
                  f"{100 * v['agreement_loo_majority']:18.1f} {100 * v['agreement_single']:11.1f} "
                  f"{100 * v['prefers_longer']:8.1f}  {by}")
    print()
    print("vs majority: GPT-4's majority of 8 labels; vs LOO maj. of 7: mean over the 8 annotations of agreement with the "
          "majority of the other 7 (the GPT-4 row is a single annotation against it); vs single: mean agreement with "
          "one GPT-4 annotation (GPT-4 row: two annotations with each other)")
    for name, t in res["targets"].items():
        print(f"target {name}: agreement over longer {t['agreement_over_longer']:.2f} +- {t['se']:.2f} points (s.e., "
              f"paired; vs majority) (>= {t['target']}): {'met' if t['met'] else 'NOT met'}")
