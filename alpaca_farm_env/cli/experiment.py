"""``alpaca-farm experiment``: the paper's experiments beyond the win-rate table. ``overoptimization``: proxy reward
vs win-rate for PPO over steps and best-of-n over n (paper Sec. 5, Fig. 5), written as a CSV and a PNG."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    from . import add_data_dir_arg

    p = sub.add_parser("experiment", help="the paper's experiments: overoptimization (Fig. 5)")
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    o = esub.add_parser(
        "overoptimization",
        help="PPO over steps and best-of-n over n against the proxy reward model, judged by the noise-free evaluator",
        description="Trains PPO against the pipeline's reward model and sweeps best-of-n over n; for each point, the "
        "mean proxy reward and the evaluator's win-rate vs Davinci003 on the preset's eval instructions. Shares the "
        "benchmark's run dir (and so its cached SFT policy, preferences and reward model); a rerun resumes. Writes "
        "<run_dir>/overoptimization/overoptimization.{csv,png,json}.")
    o.add_argument("--preset", default="cpu_all", help="preset name or YAML file (default: cpu_all)")
    o.add_argument("--run-dir", help="run dir (default: the benchmark's for this preset, sharing its stages)")
    add_data_dir_arg(o)
    o.add_argument("--policy", help="policy spec (default: the preset's)")
    o.add_argument("--n-eval", type=int, help="eval instructions (default: the preset's)")
    o.add_argument("--ns", default="1,2,4,8,16", help="best-of-n sizes, comma-separated (default 1,2,4,8,16)")
    o.add_argument("--ppo-steps", type=int, help="PPO steps (default: the preset's methods.ppo.config.total_steps; 0 traces best-of-n and "
                        "the SFT point only)")
    o.add_argument("--ppo", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a PPOConfig field of the preset's methods.ppo.config (repeatable), e.g. "
                        "--ppo learning_rate=1e-4")
    o.add_argument("--eval-every", type=int, default=5, help="evaluate PPO every this many steps (default 5)")
    o.add_argument("--json", action="store_true", help="print the result as JSON")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.set_defaults(func=run_overoptimization)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_overoptimization(args) -> int:
    from ..annotators import annotator_identity
    from ..context import RewardContext
    from ..benchmark.config import load_preset
    from ..benchmark.overoptimization import run_overoptimization as run
    from ..benchmark.runner import default_run_dir
    from ..errors import ConfigError
    from ..utils import file_lock

    cfg = load_preset(args.preset)
    if args.policy:
        cfg.policy = args.policy
    if args.n_eval is not None:
        cfg.n_eval = args.n_eval
    try:
        ns = [int(x) for x in args.ns.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--ns must be comma-separated integers, got {args.ns!r}") from None
    ppo = dict((cfg.methods.get("ppo") or {}).get("config") or {})
    for item in args.ppo:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise ConfigError(f"--ppo takes FIELD=VALUE, got {item!r}")
        ppo[field.strip()] = _value(value)
    if args.ppo_steps is not None:
        if args.ppo_steps < 0:
            raise ConfigError(f"--ppo-steps must be >= 0, got {args.ppo_steps}")
        ppo["total_steps"] = args.ppo_steps
    cfg.validate(f"preset {args.preset!r}")
    run_dir = args.run_dir or default_run_dir(
        cfg, annotator_identity(cfg.annotator, context=RewardContext.of(args.data_dir), **cfg.annotator_kwargs))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with file_lock(Path(run_dir) / "run", timeout=0,
                   busy=f"{run_dir}: a benchmark or experiment is running in this run dir; wait for it"):
        res = run(cfg, run_dir, data_dir=args.data_dir, ns=ns, ppo=ppo, eval_every=args.eval_every,
                  progress=not args.no_progress,
                  log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{'method':<10} {'n/step':>7} {'proxy reward':>13} {'win-rate':>9} {'s.e.':>5} {'avg len':>8}")
    for p in res["points"]:
        print(f"{p['method']:<10} {p['x']:>7g} {p['proxy_reward']:>13.3f} {p['win_rate']:>9.1f} "
              f"{p['standard_error']:>5.1f} {p['avg_length']:>8.0f}")
    for method, pk in res["peaks"].items():
        print(f"{method}: peak win-rate {pk['peak_win_rate']:.1f} at {pk['peak_x']:g}, last {pk['last_win_rate']:.1f} "
              f"at {pk['last_x']:g}; rise then fall: {'yes' if pk['rise_then_fall'] else 'no'}")
    print(f"wrote {res['csv']} and {res['png']}")
    return 0


def _value(text: str):
    """A command-line value: a JSON number, boolean or null (1e-4 is a float), else YAML, else the string."""
    import yaml

    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)
