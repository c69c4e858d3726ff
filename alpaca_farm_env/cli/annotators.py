"""``alpaca-farm annotators``: list the registered annotators and ``analyze`` one against GPT-4's judgments.

``analyze`` uses the data dir's GPT-4-labelled pairs (AlpacaEval-1 annotation files: output_1 = text-davinci-003,
output_2 = a model) and reports the quantities of alpaca_eval's evaluator leaderboard
(``leaderboards/evaluators/evaluators_leaderboard.csv``), except that the gold label is GPT-4, not humans:

* agreement with GPT-4 on GPT-4's non-draw pairs (an annotator draw counts one half);
* self-consistency: share of pairs with the same preference under seeds 0 and 1 (1.0 for a deterministic annotator);
* length bias: among pairs the annotator does not call a draw and whose outputs differ in length, the share where it
  prefers the longer output (the leaderboard's "Proba. prefer longer"); GPT-4's own figure on the same pairs beside it;
* cost per 1,000 annotations (from ``Annotation.cost``) and seconds per 1,000 on this machine.
"""
from __future__ import annotations

import json
import time
from typing import Any, Sequence


def add_parser(sub) -> None:
    from . import add_data_dir_arg

    p = sub.add_parser("annotators", help="list simulated annotators; analyze one against GPT-4's judgments")
    asub = p.add_subparsers(dest="annotators_command", metavar="ACTION")
    ls = asub.add_parser("list", help="registered annotator names")
    ls.set_defaults(func=run_list)
    a = asub.add_parser("analyze", help="agreement with GPT-4, self-consistency, length bias, cost")
    a.add_argument("--annotator", required=True, help="annotator spec: a registered name or 'module:attr'")
    add_data_dir_arg(a)
    a.add_argument("--max-pairs", type=int, default=1000,
                   help="analyze this many pairs, a stable-hash sample across models (default 1000; 0 = all)")
    a.add_argument("--models", nargs="*", default=None, help="only pairs of these annotated models")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=run_analyze)
    p.set_defaults(func=run_list)


def run_list(args) -> int:
    from ..annotators import list_annotators

    for name in list_annotators():
        print(name)
    return 0


def sample_pairs(rows: Sequence[dict], max_pairs: int) -> list[dict]:
    """A reproducible sample: the ``max_pairs`` rows with the smallest stable hash (all rows if 0 or fewer)."""
    from ..utils import stable_hash

    if max_pairs <= 0 or max_pairs >= len(rows):
        return list(rows)
    keyed = sorted(rows, key=lambda r: stable_hash("analyze", r["model"], r["instruction"], r.get("input", "")))
    return keyed[:max_pairs]


def _length_bias(prefs: Sequence[float | None], rows: Sequence[dict]) -> tuple[float, int]:
    longer, n = 0, 0
    for p, r in zip(prefs, rows):
        l1, l2 = len(r["output_1"]), len(r["output_2"])
        if p is None or p == 1.5 or l1 == l2:
            continue
        n += 1
        longer += int((p > 1.5) == (l2 > l1))
    return (longer / n if n else float("nan")), n


def analyze(annotator: Any, rows: Sequence[dict]) -> dict[str, Any]:
    """Figures for ``annotator`` on GPT-4-labelled ``rows`` (instruction, input, output_1, output_2, preference)."""
    cols = ([r["instruction"] for r in rows], [r.get("input", "") or "" for r in rows],
            [r["output_1"] for r in rows], [r["output_2"] for r in rows])
    t0 = time.perf_counter()
    a0 = annotator.compare(*cols, seed=0)
    seconds = time.perf_counter() - t0
    a1 = annotator.compare(*cols, seed=1)
    p0 = [a.preference for a in a0]
    p1 = [a.preference for a in a1]
    gold = [float(r["preference"]) for r in rows]
    agree, n_agree = 0.0, 0
    for p, g in zip(p0, gold):
        if g not in (1.0, 2.0) or p is None:
            continue
        n_agree += 1
        agree += 0.5 if p == 1.5 else float(round(p) == g)
    both = [(x, y) for x, y in zip(p0, p1) if x is not None and y is not None]
    lb, n_lb = _length_bias(p0, rows)
    glb, _ = _length_bias(gold, rows)
    n = len(rows)
    return {
        "annotator": getattr(annotator, "name", str(annotator)),
        "n_pairs": n,
        "n_unlabeled": sum(p is None for p in p0),
        "agreement_with_gpt4": agree / n_agree if n_agree else float("nan"),
        "self_consistency_seeds_0_1": sum(x == y for x, y in both) / len(both) if both else float("nan"),
        "prefer_longer": lb,
        "gpt4_prefer_longer": glb,
        "n_length_pairs": n_lb,
        "prefer_output_2": sum(p == 2.0 for p in p0 if p is not None) / max(1, sum(p is not None for p in p0)),
        "cost_per_1000": 1000.0 * sum(float(a.cost or 0.0) for a in a0) / n if n else 0.0,
        "seconds_per_1000": 1000.0 * seconds / n if n else 0.0,
        "from_cache_share": sum(bool(a.from_cache) for a in a0) / n if n else 0.0,
    }


def run_analyze(args) -> int:
    from ..annotators import make_annotator
    from ..judge.training_data import load_training_pairs

    rows = sample_pairs(load_training_pairs(args.data_dir, args.models), args.max_pairs)
    distilled = str(args.annotator) in ("distilled_gpt4", "pooled", "noisy_pooled")
    # a distilled judge's answer bank holds these very pairs' GPT-4 labels: hide each pair's own outputs from it
    annotator = make_annotator(args.annotator, bank_holdout=True, data_dir=args.data_dir) if distilled else make_annotator(args.annotator)
    res = analyze(annotator, rows)
    res["models"] = sorted({r["model"] for r in rows})
    if distilled:
        res["note"] = ("each pair's own outputs are hidden from the answer bank, but the judge's heads were trained on "
                       "these GPT-4 labels, so agreement here is in-sample; `alpaca-farm judge eval` gives the "
                       "leave-one-model-out figures")
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"annotator {res['annotator']} on {res['n_pairs']} GPT-4-labelled pairs ({len(res['models'])} models)")
    print(f"  agreement with GPT-4 (non-draw pairs):  {100 * res['agreement_with_gpt4']:.1f}%")
    print(f"  self-consistency (seeds 0 vs 1):        {100 * res['self_consistency_seeds_0_1']:.1f}%")
    print(f"  prefers the longer output:              {100 * res['prefer_longer']:.1f}%  "
          f"(GPT-4 on the same pairs: {100 * res['gpt4_prefer_longer']:.1f}%)")
    print(f"  unlabeled:                              {res['n_unlabeled']}")
    print(f"  cost per 1,000 annotations:             ${res['cost_per_1000']:.4f}")
    print(f"  time per 1,000 annotations (this run):  {res['seconds_per_1000']:.1f} s")
    if res.get("note"):
        print(f"  note: {res['note']}")
    return 0
