"""``alpaca-farm evaluate``: win-rate of model outputs against Davinci003, or recomputed from stored annotations.

The reference (text-davinci-003) is ``output_1`` and the model is ``output_2`` (AlpacaEval's convention). The numbers
come from :func:`alpaca_farm_env.metrics.win_rate`, the one win-rate function of the package.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from ..utils import json_safe

DEFAULT_ANNOTATOR = "pooled"


def add_parser(sub) -> None:
    from . import add_data_dir_arg

    p = sub.add_parser(
        "evaluate",
        help="win-rate vs Davinci003 of model outputs (annotating them), or recomputed from an annotations file",
        description=(
            "Win-rate of a model against text-davinci-003 (reference = output_1, model = output_2). Either annotate "
            "--model-outputs with --annotator, or recompute from stored judgments with --annotations (no annotator call)."
        ),
    )
    p.add_argument("--model-outputs", help="model outputs JSON: alpaca_eval layout (instruction, output), AlpacaFarm "
                   "layout (instruction, input, output), a benchmark run's model_outputs.json, or a model name under "
                   "alpaca_eval_results/ of the data dir")
    p.add_argument("--annotations", help="annotations JSON (instruction[, input], output_1, output_2, preference): "
                   "recompute the win-rate without calling an annotator")
    p.add_argument("--annotator", default=None, help=f"annotator spec for --model-outputs (default {DEFAULT_ANNOTATOR!r}; "
                   "any registered name or 'module:attr')")
    p.add_argument("--reference", default=None, choices=["alpacafarm", "alpacaeval1"],
                   help="Davinci003 reference set: alpacafarm (paper, set A; default for --model-outputs) or "
                   "alpacaeval1 (AlpacaEval-1, set B). With --annotations, detected from output_1 when not given")
    add_data_dir_arg(p)
    p.add_argument("--output-dir", default=None, help="where to write annotations (default ./alpaca_farm_eval/<model>)")
    p.add_argument("--seed", type=int, default=0, help="annotator seed (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _warn(msg: str) -> None:
    print(f"alpaca-farm evaluate: {msg}", file=sys.stderr)


def _name_of(path: str, rows: list[dict[str, Any]]) -> str:
    gen = rows[0].get("generator") if rows else None
    p = Path(path)
    name = gen or (p.parent.name if p.name == "model_outputs.json" else p.stem) or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))


def _detect_reference(pairs_out1: dict[tuple[str, str], str], data_dir) -> tuple[str, dict[str, int]]:
    """Which Davinci003 set the annotations' output_1 is: the one with most exact matches."""
    from ..benchmark.evaluation import fold_instruction
    from ..data import REFERENCES, load_eval_set

    counts = {}
    for ref in REFERENCES:
        n = 0
        for e in load_eval_set(ref, data_dir):
            o = pairs_out1.get((e["instruction"], e["input"]))
            if o is None:
                o = pairs_out1.get((fold_instruction(e["instruction"], e["input"]), ""))
            n += o == e["reference_output"]
        counts[ref] = n
    return max(counts, key=counts.get), counts


def evaluate(
    model_outputs: str | None = None,
    annotations: str | None = None,
    annotator: Any = None,
    reference: str | None = None,
    data_dir: str | None = None,
    output_dir: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """The ``evaluate`` command as a function: returns the JSON object it prints."""
    from ..benchmark.evaluation import annotate_pairs, match_outputs
    from ..data import load_annotations_file, load_eval_set, load_model_outputs
    from ..metrics import win_rate

    if not model_outputs and not annotations:
        raise ValueError("give --model-outputs (to annotate) or --annotations (to recompute)")
    outputs = load_model_outputs(model_outputs, data_dir) if model_outputs else None
    result: dict[str, Any] = {}
    if annotations:
        if annotator is not None:
            raise ValueError("--annotations recomputes stored judgments; --annotator would be ignored, drop one")
        rows = load_annotations_file(annotations)
        out1 = {(r["instruction"], r["input"]): r["output_1"] for r in rows}
        detected, counts = _detect_reference(out1, data_dir)
        ref = reference or detected
        if counts[ref] < len(rows):
            _warn(f"{len(rows) - counts[ref]} of {len(rows)} annotation rows have an output_1 that differs from the "
                  f"{ref!r} Davinci003 reference (matches: {counts})")
        as_outputs = [{"instruction": r["instruction"], "input": r["input"], "output": r["output_2"]} for r in rows]
        match = match_outputs(as_outputs, load_eval_set(ref, data_dir))
        names = sorted({str(r.get("annotator")) for r in rows if r.get("annotator")})
        result["annotator"] = ",".join(names) if names else "stored"
        lengths = [r["output"] for r in outputs] if outputs is not None else [r["output_2"] for r in rows]
        metrics = win_rate([r["preference"] for r in rows], lengths)
        annotations_path = str(Path(annotations).resolve())
        result["reference_matches"] = counts
    else:
        from ..annotators import make_annotator

        spec = annotator or DEFAULT_ANNOTATOR
        ref = reference or "alpacafarm"
        ann = make_annotator(spec)
        match = match_outputs(outputs, load_eval_set(ref, data_dir))
        name = _name_of(model_outputs, outputs)
        out_dir = Path(output_dir) if output_dir else Path("alpaca_farm_eval") / name
        ann_name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(getattr(ann, "name", spec)))
        cache = out_dir / f"annotations_{ref}_{ann_name}.json"
        rows, n_cached = annotate_pairs(ann, match.pairs, cache_path=cache, seed=seed, progress=progress,
                                        desc=f"annotate ({ann_name})")
        result["annotator"] = str(getattr(ann, "name", spec))
        result["n_from_cache"] = n_cached
        metrics = win_rate([r["preference"] for r in rows], [r["output_2"] for r in rows])
        annotations_path = str(cache.resolve())
    if match.missing:
        _warn(f"{len(match.missing)} eval instructions have no model output (not evaluated), e.g. "
              f"{match.missing[0]['instruction'][:60]!r}")
    if match.extra:
        _warn(f"{len(match.extra)} rows are not in the {ref!r} eval set (not evaluated), e.g. "
              f"{match.extra[0]['instruction'][:60]!r}")
    n_rows = len(rows)
    if metrics["n_total"] < n_rows:
        _warn(f"{n_rows - metrics['n_total']} of {n_rows} pairs are unlabeled and not counted in n_total")
    result = {
        **metrics,
        **result,
        "reference": ref,
        "annotations_path": annotations_path,
        "model_outputs_path": str(Path(model_outputs).resolve()) if model_outputs and Path(model_outputs).exists() else model_outputs,
        "n_unlabeled": n_rows - metrics["n_total"],
        "n_missing": len(match.missing),
        "n_extra": len(match.extra),
        "missing": [_row_id(r) for r in match.missing],
        "extra": [_row_id(r) for r in match.extra],
    }
    return result


def _row_id(r: dict[str, Any]) -> dict[str, str]:
    return {"instruction": r["instruction"], "input": r.get("input", "")}



def run(args) -> int:
    res = evaluate(
        model_outputs=args.model_outputs,
        annotations=args.annotations,
        annotator=args.annotator,
        reference=args.reference,
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        seed=args.seed,
        progress=not args.no_progress and not args.json,
    )
    if args.json:
        print(json.dumps(json_safe(res)))
        return 0
    al = res["avg_length"]
    print(f"win-rate vs Davinci003 ({res['reference']}): {res['win_rate']:.2f} ± {res['standard_error']:.2f}  "
          f"(n={res['n_total']}, wins {res['n_wins']}, losses {res['n_wins_base']}, draws {res['n_draws']}, "
          f"avg length {'-' if al is None else f'{al:.0f}'} chars)")
    print(f"annotator: {res['annotator']}   annotations: {res['annotations_path']}")
    return 0
