"""``alpaca-farm benchmark``: run methods end to end (fit, generate, annotate vs Davinci003) and print Table 2."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    from . import add_data_dir_arg

    p = sub.add_parser(
        "benchmark",
        help="run methods (sft, best_of_n, ...) end to end and print the win-rate table vs Davinci003",
        description="For each method: fit (if it trains), generate on the eval subset, annotate against Davinci003 "
        "with the evaluator, and write a run directory (outputs, annotations, results.json/.md, chart). "
        "Re-running the same command resumes from cached generations and annotations.",
    )
    p.add_argument("--preset", default="tiny", help="'tiny' (offline default), 'paper', or a YAML file (copy one: "
                   "--print-config)")
    p.add_argument("--methods", help="comma-separated methods from the agents registry (default: the preset's)")
    p.add_argument("--n-eval", type=int, help="eval instructions, stratified by source (default: the preset's)")
    p.add_argument("--run-dir", help="run directory (default <runs_root>/<preset>-<config digest>: reruns resume)")
    add_data_dir_arg(p)
    p.add_argument("--policy", help="policy spec: smollm2-135m, tiny-llama, a local model folder (e.g. your SFT10k)")
    p.add_argument("--annotator", help="evaluator annotator spec (default: the preset's)")
    p.add_argument("--reward", help="reward backend for reranking methods such as best_of_n (never the evaluator)")
    p.add_argument("--n", type=int, dest="best_of", help="samples per instruction for best_of_n")
    p.add_argument("--max-new-tokens", type=int, help="override the preset's max new tokens")
    p.add_argument("--report-to", choices=["none", "tensorboard", "wandb"],
                   help="log every stage's and method's training to this tracker too (docs/tracking.md; CSV always)")
    p.add_argument("--runs-root", help="where run dirs and leaderboard.json live (default: the preset's, 'runs')")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--dry-run", action="store_true", help="check everything, print the plan (stages to build or "
                   "reuse, methods, sizes, cached outputs) and exit without any work")
    p.add_argument("--force", action="store_true", help="reuse a run dir that holds another preset's run, replacing "
                   "its results and leaderboard rows")
    p.add_argument("--json", action="store_true", help="print results.json on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def resolve_config(args):
    """The preset with the command-line overrides applied, validated as a whole before any work starts."""
    from ..benchmark.config import load_preset, preset_path

    cfg = load_preset(args.preset)
    flags = []
    if args.methods:
        names = [m.strip() for m in args.methods.split(",") if m.strip()]
        cfg.methods = {m: cfg.methods.get(m, {}) for m in names}
        flags.append("--methods")
    if args.n_eval is not None:
        cfg.n_eval = args.n_eval
        flags.append("--n-eval")
    if args.policy:
        cfg.policy = args.policy
    if args.annotator:
        cfg.annotator = args.annotator
        cfg.annotator_kwargs = {}
        flags.append("--annotator")
    if args.max_new_tokens is not None:
        cfg.generation.max_new_tokens = args.max_new_tokens
        flags.append("--max-new-tokens")
    if args.runs_root:
        cfg.runs_root = args.runs_root
    if args.report_to:  # tracking never changes a run's outputs or keys
        cfg.report_to = args.report_to
    for name, kw in cfg.methods.items():
        if args.reward and (name == "best_of_n" or "reward" in kw):
            kw["reward"] = args.reward
            kw.pop("reward_kwargs", None)
        if args.best_of is not None and name == "best_of_n":
            kw["n"] = args.best_of
    flags += ["--reward"] * bool(args.reward) + ["--n"] * (args.best_of is not None)
    source = str(preset_path(args.preset)) + (f" with {', '.join(flags)}" if flags else "")
    return cfg.validate(source)


def run(args) -> int:
    from ..benchmark.report import markdown_table
    from ..benchmark.runner import run_benchmark

    cfg = resolve_config(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    if args.dry_run:
        from ..benchmark.runner import describe_plan

        print(describe_plan(cfg, run_dir=args.run_dir, data_dir=args.data_dir, force=args.force))
        return 0
    res = run_benchmark(cfg, run_dir=args.run_dir, data_dir=args.data_dir, progress=not args.no_progress,
                        force=args.force)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print()
    print(markdown_table(res))
    print()
    run_dir = Path(res["run_dir"])
    print(f"run dir:     {run_dir}")
    print(f"chart:       {res['chart_path']}")
    print(f"table:       {run_dir / 'results.md'}")
    for m in res["methods"]:
        print(f"outputs:     {m['outputs_path']}")
    print(f"leaderboard: {res['leaderboard_path']}  (alpaca-farm leaderboard --runs-root {run_dir.parent})")
    sys.stdout.flush()
    return 0
