"""``alpaca-farm evaluate``: win-rate of model outputs against Davinci003, or recomputed from stored annotations.

The reference (text-davinci-003) is ``output_1`` and the model is ``output_2`` (AlpacaEval's convention). The numbers
come from :func:`alpaca_farm_env.metrics.win_rate`, the one win-rate function of the package.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EvaluationError
from ..utils import accepts_kwarg, digest, json_safe

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
    from ..data import REFERENCES, load_eval_set

    counts = {}
    for ref in REFERENCES:
        counts[ref] = sum(_lookup(pairs_out1, e) == e["reference_output"] for e in load_eval_set(ref, data_dir))
    return max(counts, key=counts.get), counts


def _lookup(by_key: dict[tuple[str, str], Any], e: dict[str, Any]) -> Any:
    """An annotation keyed by (instruction, input) in either layout (AlpacaEval folds the input in)."""
    from ..benchmark.evaluation import fold_instruction

    got = by_key.get((e["instruction"], e["input"]))
    return got if got is not None else by_key.get((fold_instruction(e["instruction"], e["input"]), ""))


def _eval_index(eval_rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    from ..benchmark.evaluation import fold_instruction

    index: dict[tuple[str, str], int] = {}
    for j, e in enumerate(eval_rows):
        index[(e["instruction"], e["input"])] = j
        if e["input"]:
            index.setdefault((fold_instruction(e["instruction"], e["input"]), ""), j)
    return index


def _select_annotations(rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], path: str, ref: str):
    """The rows that are evaluated: one per eval instruction, judged against the ``ref`` Davinci003 output.

    Returns ``(selected [(eval index, row)], extra rows, rows whose output_1 is not the reference, duplicates
    dropped, eval rows missing)``. A second row for an instruction with another output_2 or another judgment means
    the file mixes models or runs: that raises, since no single win-rate describes it.
    """
    index = _eval_index(eval_rows)
    first: dict[int, int] = {}
    selected, extra, off_reference, duplicates = [], [], [], []
    for i, r in enumerate(rows):
        j = index.get((r["instruction"], r["input"]))
        if j is None:
            extra.append(r)
            continue
        if r["output_1"] != eval_rows[j]["reference_output"]:
            off_reference.append(r)
            continue
        if j in first:
            r0 = rows[first[j]]
            if r0["output_2"] != r["output_2"] or r0["preference"] != r["preference"]:
                what = "output_2" if r0["output_2"] != r["output_2"] else "preference"
                gens = sorted({str(x.get("generator_2")) for x in (r0, r) if x.get("generator_2")})
                raise EvaluationError(
                    f"{path}, rows {first[j]} and {i}: the same instruction twice with a different {what}"
                    + (f" (generator_2 {', '.join(gens)})" if len(gens) > 1 else "")
                    + f": {r['instruction'][:60]!r}. The file mixes models or runs; evaluate one model's annotations "
                    "per file")
            duplicates.append(r)
            continue
        first[j] = i
        selected.append((j, r))
    missing = [e for j, e in enumerate(eval_rows) if j not in first]
    return selected, extra, off_reference, duplicates, missing


def _check_model_outputs(selected, eval_rows, outputs, annotations: str, model_outputs: str) -> None:
    """--model-outputs beside --annotations must be the outputs that were judged (output_2), row for row."""
    index = _eval_index(eval_rows)
    by_row = {index[k]: o["output"] for o in outputs if (k := (o["instruction"], o.get("input", "") or "")) in index}
    bad = [(j, r) for j, r in selected if by_row.get(j) != r["output_2"]]
    if bad:
        j, r = bad[0]
        why = "has no output there" if j not in by_row else "has another output there"
        raise EvaluationError(
            f"{model_outputs} does not match {annotations}: {len(bad)} of {len(selected)} judged output_2 differ from "
            f"the model outputs, e.g. {eval_rows[j]['instruction'][:60]!r} ({model_outputs} {why}). Pass the outputs "
            "that were annotated, or drop --model-outputs")


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
    """The ``evaluate`` command as a function: returns the JSON object it prints.

    Only rows of the eval set, judged against the chosen Davinci003 reference, enter the win-rate, each instruction
    once; everything else is reported (``extra``, ``n_off_reference``, ``n_duplicates``) and left out. Raises
    :class:`EvaluationError` when nothing is left to evaluate or the inputs contradict each other.
    """
    from ..data import load_model_outputs
    from ..metrics import win_rate

    if not model_outputs and not annotations:
        raise ConfigError("give --model-outputs (to annotate) or --annotations (to recompute)")
    if annotations and annotator is not None:
        raise ConfigError("--annotations recomputes stored judgments; --annotator would be ignored, drop one")
    if not annotations:
        _check_annotator_name(annotator or DEFAULT_ANNOTATOR)  # a typo fails before any file is read
    outputs = load_model_outputs(model_outputs, data_dir) if model_outputs else None
    if annotations:
        ev = _from_annotations(annotations, reference, data_dir, outputs, model_outputs)
    else:
        ev = _annotate_outputs(model_outputs, outputs, annotator or DEFAULT_ANNOTATOR, reference or "alpacafarm",
                               data_dir, output_dir, seed, progress)
    rows, missing, extra = ev.rows, ev.missing, ev.extra
    metrics = win_rate([r["preference"] for r in rows], [r["output_2"] for r in rows])
    if missing:
        _warn(f"{len(missing)} eval instructions have no model output (not evaluated), e.g. "
              f"{missing[0]['instruction'][:60]!r}")
    if extra:
        _warn(f"{len(extra)} rows are not in the {ev.reference!r} eval set (not evaluated), e.g. "
              f"{extra[0]['instruction'][:60]!r}")
    n_rows = len(rows)
    if metrics["n_total"] == 0:
        raise EvaluationError(f"all {n_rows} evaluated pairs are unlabeled (no parseable preference); no win-rate "
                              f"(annotations: {ev.annotations_path})")
    if metrics["n_total"] < n_rows:
        _warn(f"{n_rows - metrics['n_total']} of {n_rows} pairs are unlabeled and not counted in n_total")
    return {
        **metrics,
        **ev.info,
        "reference": ev.reference,
        "annotations_path": ev.annotations_path,
        "model_outputs_path": str(Path(model_outputs).resolve()) if model_outputs and Path(model_outputs).exists() else model_outputs,
        "n_unlabeled": n_rows - metrics["n_total"],
        "n_missing": len(missing),
        "n_extra": len(extra),
        "missing": [_row_id(r) for r in missing],
        "extra": [_row_id(r) for r in extra],
    }


@dataclass
class _Evaluated:
    """The judged rows that enter the win-rate, what was left out, and what the report says about their source."""

    rows: list[dict[str, Any]]
    reference: str
    missing: list[dict[str, Any]]  # eval rows without a judged output
    extra: list[dict[str, Any]]  # rows that are not eval instructions
    annotations_path: str
    info: dict[str, Any] = field(default_factory=dict)  # annotator name and source-specific counts


def _from_annotations(annotations: str, reference: str | None, data_dir, outputs, model_outputs) -> _Evaluated:
    """Stored judgments (``--annotations``): one row per eval instruction, against the Davinci003 reference that
    output_1 is (``reference``, else the one detected)."""
    from ..data import load_annotations_file, load_eval_set

    rows = load_annotations_file(annotations)
    if not rows:
        raise EvaluationError(f"{annotations}: no annotation rows, nothing to evaluate")
    out1 = {(r["instruction"], r["input"]): r["output_1"] for r in rows}
    detected, counts = _detect_reference(out1, data_dir)
    ref = reference or detected
    if counts[ref] == 0:
        raise EvaluationError(
            f"{annotations}: output_1 is the {ref!r} Davinci003 output in none of its {len(rows)} rows (exact "
            f"matches per reference: {counts}); these are not judgments against Davinci003"
            + ("" if reference else " or of eval-set instructions"))
    eval_rows = load_eval_set(ref, data_dir)
    selected, extra, off_ref, dups, missing = _select_annotations(rows, eval_rows, annotations, ref)
    if off_ref:
        _warn(f"{len(off_ref)} of {len(rows)} rows have an output_1 that is not the {ref!r} Davinci003 reference "
              f"(not evaluated; exact matches per reference: {counts})")
    if dups:
        _warn(f"{len(dups)} rows repeat an earlier row of the same instruction (counted once)")
    if outputs is not None:
        _check_model_outputs(selected, eval_rows, outputs, annotations, model_outputs)
    rows = [r for _, r in selected]
    names = sorted({str(r.get("annotator")) for r in rows if r.get("annotator")})
    info = {"annotator": ",".join(names) if names else "stored", "reference_matches": counts,
            "n_off_reference": len(off_ref), "n_duplicates": len(dups)}
    return _Evaluated(rows, ref, missing, extra, str(Path(annotations).resolve()), info)


def _annotate_outputs(model_outputs: str, outputs, spec: Any, ref: str, data_dir, output_dir, seed: int,
                      progress: bool) -> _Evaluated:
    """``--model-outputs`` judged by the annotator ``spec`` against the ``ref`` Davinci003 outputs, through a cache
    file under ``output_dir`` keyed by the model, its outputs file, the reference and the annotator's identity."""
    from ..annotators import ANNOTATORS, annotator_identity, make_annotator
    from ..context import RewardContext
    from ..benchmark.evaluation import annotate_pairs, match_outputs
    from ..data import load_eval_set

    match = match_outputs(outputs, load_eval_set(ref, data_dir))
    if not match.pairs:
        raise EvaluationError(f"{model_outputs}: none of its {len(outputs)} rows is an instruction of the {ref!r} "
                              "eval set; nothing to evaluate")
    context = RewardContext.of(data_dir)
    identity = annotator_identity(spec, context=context)  # keys the cache: another judge never reuses it
    # annotate_pairs shows the progress; an annotator's own bar (the OpenAI pool's) would print a second one
    quiet = {"show_progress": False} if accepts_kwarg(ANNOTATORS.resolve(spec), "show_progress") else {}
    ann = make_annotator(spec, context=context, **quiet)
    name = _name_of(model_outputs, outputs)
    out_dir = Path(output_dir) if output_dir else Path("alpaca_farm_eval") / name
    ann_name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(getattr(ann, "name", spec)))
    # the model's name and which outputs file: two models evaluated into one --output-dir never share a cache
    source = digest(str(_outputs_file(model_outputs, data_dir)))[:8]
    cache = out_dir / f"annotations_{name}-{source}_{ref}_{ann_name}-{identity[:8]}.json"
    rows, n_cached = annotate_pairs(ann, match.pairs, cache_path=cache, annotator_id=f"{spec}@{identity}",
                                    seed=seed, progress=progress, desc=f"annotate ({ann_name})")
    n_hidden = sum(bool(r.get("bank_hidden")) for r in rows)
    if n_hidden:
        _warn(f"{n_hidden} outputs are GPT-4-labelled answers in the judge's answer bank (e.g. a model whose "
              "AlpacaEval annotations the data dir holds); they were hidden from the bank, so GPT-4's verdicts "
              "were not read back")
    info = {"annotator_identity": identity, "n_bank_hidden": n_hidden, "annotator": str(getattr(ann, "name", spec)),
            "n_from_cache": n_cached}
    return _Evaluated(rows, ref, match.missing, match.extra, str(cache.resolve()), info)


def _check_annotator_name(spec: Any) -> None:
    from ..annotators import ANNOTATORS
    from ..registry import UnknownSpecError

    try:
        ANNOTATORS.resolve(spec)
    except UnknownSpecError as e:
        raise ConfigError(f"--annotator: {e}") from None


def _outputs_file(model_outputs: str, data_dir) -> Path:
    path = Path(model_outputs)
    if path.exists():
        return path.resolve()
    from ..data import resolve_data_dir

    return Path(str(resolve_data_dir(data_dir))) / "alpaca_eval_results" / model_outputs / "model_outputs.json"


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
