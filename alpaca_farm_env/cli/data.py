"""``alpaca-farm data``: split sizes, sources and the eval set's composition; checks the eval set's references."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    from . import add_data_dir_arg

    p = sub.add_parser("data", help="print split sizes, sources and the eval set's composition")
    add_data_dir_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import describe

    info = describe(args.data_dir)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"source: {info['source']}")
    ev = info["eval"]
    print(f"eval set: {ev['n']} instructions ({ev['with_input']} with input)")
    # describe() raised unless every reference has these rows in this order
    print(f"references: {', '.join(info['references'])} (checked: same {ev['n']} prompts in the same order)")
    for name, n in ev["by_dataset"].items():
        print(f"  {name:<13} {n:>4}")
    print("splits:")
    for name, s in info["splits"].items():
        print(f"  {name:<24} {s['n']:>5}  {s['source']}")
    if info.get("gpt4_annotated_models"):
        print(f"models with GPT-4 (AlpacaEval-1) annotations: {len(info['gpt4_annotated_models'])}")
    return 0
