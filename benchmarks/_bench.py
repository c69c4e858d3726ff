"""Shared helpers of the ``benchmarks/bench_p*.py`` scripts (not a benchmark itself: ``run_all`` skips it).

Each script defines ``run(quick: bool) -> dict`` with ``figures``: a list of
``{"id", "name", "value", "target", "op", "met", "unit", "detail"}`` (``value`` a ratio or a count measured in one
process, ``op`` ``"<="``/``">="``/``"=="``; ``met`` = value op target) and calls :func:`main` from ``__main__``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
_SHARED = REPO.parent / "shared" / "data"
if not os.environ.get("ALPACA_FARM_DATA_DIR") and (_SHARED / "README.md").is_file():
    os.environ["ALPACA_FARM_DATA_DIR"] = str(_SHARED)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEED = 0


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def warm_median(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def interleaved(cases: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each case in each of ``repeats`` rounds. The cases run back to back in every round, so that a load
    change on the machine hits them alike, and in reversed order every other round, so that neither side always runs
    first. (On this shared 2-core machine the same generate call was measured anywhere from 12.4 to 16.3 s.)"""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(repeats):
        for name, fn in (list(cases.items()) if r % 2 == 0 else list(cases.items())[::-1]):
            times[name].append(timed(fn)[0])
    return times


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> tuple[float, float, float]:
    """Median, min and max over rounds of ``times[num][i] / times[den][i]``: each round's two sides ran back to
    back, so their ratio cancels the machine's slow drifts that a ratio of separate medians keeps."""
    ratios = sorted(a / b for a, b in zip(times[num], times[den]))
    return statistics.median(ratios), ratios[0], ratios[-1]


def figure(fid: str, name: str, value: float, target: float, op: str = ">=", unit: str = "x",
           detail: str = "") -> dict[str, Any]:
    met = {">=": value >= target, "<=": value <= target, "==": value == target, "<": value < target}[op]
    return {"id": fid, "name": name, "value": float(value), "target": float(target), "op": op, "met": bool(met),
            "unit": unit, "detail": detail}


def main(run: Callable[[bool], dict], doc: str) -> None:
    ap = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for development")
    ap.add_argument("--json", default=None, help="write the result dict here (run_all uses it)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = run(args.quick)
    result.setdefault("quick", args.quick)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    for f in result.get("figures", []):
        print(f"  [{f['id']}] {f['name']}: {f['value']:.3g}{f['unit']} (target {f['op']} {f['target']:g}{f['unit']}: "
              f"{'met' if f['met'] else 'MISSED'}) {f['detail']}", flush=True)
    print(f"  ({result['seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
