"""``alpaca-farm leaderboard``: accumulated benchmark runs, with the paper's Table 2 beside them as a reference."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    from . import add_data_dir_arg

    p = sub.add_parser("leaderboard", help="print the benchmark runs leaderboard and the paper's Table 2 reference")
    p.add_argument("--runs-root", default="runs", help="directory holding leaderboard.json (default: runs)")
    add_data_dir_arg(p)
    p.add_argument("--json", action="store_true", help='print {"runs": [...], "paper_reference": {...}}')
    p.add_argument("--against", metavar="RUN", default=None,
                   help="mark the rows whose n (eval instructions) differs from this run's (its run dir or name); "
                        "default: from the most common n in the table")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..benchmark.leaderboard import PAPER_LABEL, format_leaderboard, load_leaderboard, paper_table2

    rows = load_leaderboard(args.runs_root)
    paper, source = paper_table2(args.data_dir)
    if args.json:
        print(json.dumps({"runs": rows, "paper_reference": {"label": PAPER_LABEL, "source": source, "rows": paper}}, indent=2))
        return 0
    against = {"against": args.against} if args.against is not None else {}  # default: the most common n
    print(format_leaderboard(rows, paper, source, **against))
    return 0
