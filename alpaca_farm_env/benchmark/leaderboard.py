"""The runs leaderboard (``<runs_root>/leaderboard.json``) and the paper's Table 2 as a separate labelled reference.

Our runs and the paper's numbers are never mixed in one table: they use different policies, evaluators and (for the
tiny preset) a subset of the eval set.

Each row keeps its run's size (``n_eval``, the eval instructions the run scored; ``n``, those labelled): win-rates
over different instruction sets are not directly comparable, so the printed table marks every row whose n differs from
the table's most common n (or from a chosen run's), and a row without n (written before rows kept it) shows it as
unknown.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataFormatError
from ..utils import atomic_write_text, file_lock

LEADERBOARD_FILE = "leaderboard.json"
PAPER_CSV = "leaderboards/alpaca_farm_paper_precomputed_annotator_pool_v0.csv"
# Fallback when the data dir lacks the CSV: AlpacaFarm's precomputed simulated-pool (annotator_pool_v0) win-rates vs
# Davinci003, tatsu-lab/alpaca_farm @ 236b172 src/alpaca_farm/auto_annotations/eval.py (the paper's Table 2 models).
PAPER_FALLBACK = [
    ("GPT4", 79.54, 1.40, 804), ("ChatGPT", 63.04, 1.69, 805), ("RLHF PPO", 49.25, 1.75, 805),
    ("SFT 52k (Alpaca 7B)", 39.75, 1.71, 805), ("SFT 10k", 35.85, 1.67, 802), ("Davinci001", 24.97, 1.53, 805),
    ("LLaMA 7B", 12.65, 1.19, 775),
]
PAPER_LABEL = ("Reference only - AlpacaFarm paper (simulated annotator pool, 7B LLaMA policies, all 805 instructions, "
               "Davinci003 reference A); not comparable to the runs above")


def leaderboard_path(runs_root: str | Path) -> Path:
    return Path(runs_root) / LEADERBOARD_FILE


# the fields format_leaderboard reads; a row without them is malformed ("n" and "n_eval" may be missing: older rows)
ROW_FIELDS = ("run_dir", "preset", "method", "label", "policy", "evaluator", "win_rate")
NUMBER_FIELDS = ("win_rate", "standard_error", "avg_length", "win_rate_vs_baseline", "standard_error_vs_baseline",
                 "paired_diff", "paired_standard_error")
COUNT_FIELDS = ("n", "n_eval")


def load_leaderboard(runs_root: str | Path) -> list[dict[str, Any]]:
    """The rows of ``<runs_root>/leaderboard.json`` ([] when there is none). A file that is not a JSON list of rows
    raises :class:`DataFormatError` naming it and the row: it is never treated as empty (and then overwritten)."""
    path = leaderboard_path(runs_root)
    if path.is_dir():
        raise DataFormatError(path, "is a directory, expected the leaderboard JSON file")
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(path, f"invalid JSON ({e}); fix or move the file, it is not overwritten") from None
    if not isinstance(rows, list):
        raise DataFormatError(path, f"expected a JSON list of leaderboard rows, got {type(rows).__name__}; fix or "
                              "move the file, it is not overwritten")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataFormatError(path, f"expected an object, got {type(r).__name__}", row=i)
        for key in ROW_FIELDS:
            if key not in r:
                raise DataFormatError(path, "missing field", row=i, field=key)
        for key in NUMBER_FIELDS:
            if r.get(key) is not None and (not isinstance(r[key], (int, float)) or isinstance(r[key], bool)):
                raise DataFormatError(path, f"expected a number or null, got {r[key]!r}", row=i, field=key)
        for key in COUNT_FIELDS:
            if r.get(key) is not None and (not isinstance(r[key], int) or isinstance(r[key], bool) or r[key] < 0):
                raise DataFormatError(path, f"expected a count or null, got {r[key]!r}", row=i, field=key)
        ci = r.get("paired_ci95")
        if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(
                x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in ci)):
            raise DataFormatError(path, f"expected [low, high] or null, got {ci!r}", row=i, field="paired_ci95")
    return rows


def add_run(runs_root: str | Path, results: dict[str, Any], replace_run_dir: bool = False) -> Path:
    """Upsert one row per method of ``results``, keyed by (run dir, method): a resumed run replaces its own rows.
    ``replace_run_dir`` first drops every row of the run dir (a run dir reused for another preset).

    The read-modify-write holds the leaderboard's lock, so two runs finishing together both keep their rows."""
    new = {(results["run_dir"], m["method"]) for m in results["methods"]}
    path = leaderboard_path(runs_root)
    with file_lock(path):
        rows = [r for r in load_leaderboard(runs_root) if (r.get("run_dir"), r.get("method")) not in new
                and not (replace_run_dir and r.get("run_dir") == results["run_dir"])]
        for m in results["methods"]:
            vs, paired = m.get("vs_baseline") or {}, m.get("paired") or {}
            rows.append({
                "run_dir": results["run_dir"], "preset": results["preset"], "created": results["created"],
                "method": m["method"], "label": m["label"], "reward": m.get("reward"), "policy": results["policy"],
                "evaluator": results["evaluator"], "evaluator_identity": results.get("evaluator_identity"),
                "reference": results["reference"], "n": m["metrics"]["n_total"], "n_eval": results.get("n_eval"),
                "win_rate": m["metrics"]["win_rate"], "standard_error": m["metrics"]["standard_error"],
                "avg_length": m["metrics"]["avg_length"], "baseline": vs.get("baseline"),
                "win_rate_vs_baseline": vs.get("win_rate"), "standard_error_vs_baseline": vs.get("standard_error"),
                "paired_baseline": paired.get("baseline"), "paired_diff": paired.get("diff"),
                "paired_standard_error": paired.get("standard_error"), "paired_ci95": paired.get("ci95"),
                "separable": paired.get("separable"),
            })
        atomic_write_text(path, json.dumps(rows, indent=1))
    return path


def paper_table2(data_dir: str | Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """The paper's simulated win-rates vs Davinci003 and where they came from."""
    from ..data import resolve_data_dir

    try:
        root = resolve_data_dir(data_dir)
    except FileNotFoundError:
        root = None
    if root is not None and (root / PAPER_CSV).is_file():
        with open(root / PAPER_CSV, newline="", encoding="utf-8") as f:
            rows = [{"model": r["model"], "win_rate": float(r["win_rate"]), "standard_error": float(r["standard_error"]),
                     "n": int(float(r["n_total"]))} for r in csv.DictReader(f)]
        return sorted(rows, key=lambda r: -r["win_rate"]), str(root / PAPER_CSV)
    rows = [{"model": m, "win_rate": w, "standard_error": s, "n": n} for m, w, s, n in PAPER_FALLBACK]
    return rows, "tatsu-lab/alpaca_farm@236b172 src/alpaca_farm/auto_annotations/eval.py (built-in copy)"


def run_n(row: dict[str, Any]) -> int | None:
    """A row's n: the eval instructions its run scored (``n_eval``), else the labelled ones (``n``, rows written
    before ``n_eval`` was kept), else None (unknown)."""
    return row.get("n_eval") if row.get("n_eval") is not None else row.get("n")


def reference_n(rows: list[dict[str, Any]], against: str | None = None) -> int | None:
    """The n the table's rows are compared with: that of the run ``against`` (a run dir, or its folder name), else
    the most common known n (ties: the larger). None when no row has a known n. Raises :class:`ConfigError` when no
    row belongs to ``against`` or its n is unknown."""
    if against is not None:
        mine = [r for r in rows if against in (r["run_dir"], Path(r["run_dir"]).name)]
        if not mine:
            raise ConfigError(f"--against {against!r}: no leaderboard row of that run (give its run dir or its name)")
        if run_n(mine[0]) is None:
            raise ConfigError(f"--against {against!r}: that run's rows do not record n")
        return run_n(mine[0])
    counts = Counter(n for n in map(run_n, rows) if n is not None)
    return max(counts, key=lambda n: (counts[n], n)) if counts else None


def _fmt_paired(r: dict[str, Any]) -> str:
    if r.get("paired_diff") is None:
        return "—"
    lo, hi = r.get("paired_ci95") or (None, None)
    text = f"{r['paired_diff']:+.1f}" + (f" [{lo:+.1f}, {hi:+.1f}]" if lo is not None and hi is not None else "")
    return text + (" *" if r.get("separable") else "") + f" (vs {r.get('paired_baseline') or r.get('baseline')})"


def format_leaderboard(rows: list[dict[str, Any]], paper: list[dict[str, Any]], paper_source: str,
                       against: str | None = None) -> str:
    """The runs table (best win-rate first) and, apart, the paper's Table 2 reference; returns the text.

    The n column is the run's number of eval instructions; a row whose n differs from :func:`reference_n` (the most
    common n, or run ``against``'s) is marked ``†`` and one whose n is unknown ``?``, each explained under the table.
    The paired column is the difference of win-rates vs Davinci003 with the run's baseline method, per instruction,
    with its 95% bootstrap interval (``*``: separable, the interval excludes 0)."""
    def f(w, s):
        return "—" if w is None else (f"{w:.1f} ± {s:.1f}" if s is not None else f"{w:.1f}")

    out = ["Runs (win-rate vs Davinci003, %):"]
    if not rows:
        out.append("  (no runs yet: run `alpaca-farm benchmark`)")
    else:
        ref = reference_n(rows, against)
        out.append("| preset | method | policy | evaluator | n | vs Davinci003 | vs baseline | paired Δ vs baseline "
                   "[95% CI] | avg length | run |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        marks: set[str] = set()
        for r in sorted(rows, key=lambda r: (r.get("win_rate") is None, -(r.get("win_rate") or 0))):
            vb = f(r.get("win_rate_vs_baseline"), r.get("standard_error_vs_baseline"))
            if r.get("baseline") and vb != "—":
                vb += f" (vs {r['baseline']})"
            al = r.get("avg_length")
            n = run_n(r)
            mark = "?" if n is None else ("†" if ref is not None and n != ref else "")
            marks.add(mark)
            n_cell = ("unknown " + mark) if n is None else f"{n}{' ' + mark if mark else ''}"
            out.append(f"| {r['preset']} | {r['label']} | {r['policy']} | {r['evaluator']} | {n_cell} | "
                       f"{f(r.get('win_rate'), r.get('standard_error'))} | {vb} | {_fmt_paired(r)} | "
                       f"{'—' if al is None else f'{al:.0f}'} | {Path(r['run_dir']).name} |")
        where = f"run {against}'s n" if against is not None else "the most common n in this table"
        if "†" in marks:
            out.append(f"† n differs from {ref} ({where}): a win-rate over another set of instructions, not directly "
                       "comparable with the others")
        if "?" in marks:
            out.append("? n unknown (a row written before the leaderboard kept n): compare with care")
        if any(r.get("paired_diff") is not None for r in rows):
            out.append("paired Δ: percentage points, the method's win-rate vs Davinci003 minus its run's baseline "
                       "method's, on the same instructions; * the 95% interval excludes 0 (separable)")
    out += ["", PAPER_LABEL + ":", f"(source: {paper_source})", "| model | win-rate vs Davinci003 (%) | n |", "|---|---|---|"]
    out += [f"| {p['model']} | {f(p['win_rate'], p['standard_error'])} | {p['n']} |" for p in paper]
    return "\n".join(out)
