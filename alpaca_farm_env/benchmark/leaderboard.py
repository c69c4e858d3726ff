"""The runs leaderboard (``<runs_root>/leaderboard.json``) and the paper's Table 2 as a separate labelled reference.

Our runs and the paper's numbers are never mixed in one table: they use different policies, evaluators and (for the
tiny preset) a subset of the eval set.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..errors import DataFormatError
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


# the fields format_leaderboard reads; a row without them is malformed
ROW_FIELDS = ("run_dir", "preset", "method", "label", "policy", "evaluator", "n", "win_rate")


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
        for key in ("win_rate", "standard_error", "avg_length", "win_rate_vs_baseline", "standard_error_vs_baseline"):
            if r.get(key) is not None and (not isinstance(r[key], (int, float)) or isinstance(r[key], bool)):
                raise DataFormatError(path, f"expected a number or null, got {r[key]!r}", row=i, field=key)
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
            vs = m.get("vs_baseline") or {}
            rows.append({
                "run_dir": results["run_dir"], "preset": results["preset"], "created": results["created"],
                "method": m["method"], "label": m["label"], "reward": m.get("reward"), "policy": results["policy"],
                "evaluator": results["evaluator"], "evaluator_identity": results.get("evaluator_identity"),
                "reference": results["reference"], "n": m["metrics"]["n_total"],
                "win_rate": m["metrics"]["win_rate"], "standard_error": m["metrics"]["standard_error"],
                "avg_length": m["metrics"]["avg_length"], "baseline": vs.get("baseline"),
                "win_rate_vs_baseline": vs.get("win_rate"), "standard_error_vs_baseline": vs.get("standard_error"),
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


def format_leaderboard(rows: list[dict[str, Any]], paper: list[dict[str, Any]], paper_source: str) -> str:
    def f(w, s):
        return "—" if w is None else (f"{w:.1f} ± {s:.1f}" if s is not None else f"{w:.1f}")

    out = ["Runs (win-rate vs Davinci003, %):"]
    if not rows:
        out.append("  (no runs yet: run `alpaca-farm benchmark`)")
    else:
        out.append("| preset | method | policy | evaluator | n | vs Davinci003 | vs baseline | avg length | run |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in sorted(rows, key=lambda r: (r.get("win_rate") is None, -(r.get("win_rate") or 0))):
            vb = f(r.get("win_rate_vs_baseline"), r.get("standard_error_vs_baseline"))
            if r.get("baseline") and vb != "—":
                vb += f" (vs {r['baseline']})"
            al = r.get("avg_length")
            out.append(f"| {r['preset']} | {r['label']} | {r['policy']} | {r['evaluator']} | {r['n']} | "
                       f"{f(r.get('win_rate'), r.get('standard_error'))} | {vb} | {'—' if al is None else f'{al:.0f}'} | "
                       f"{Path(r['run_dir']).name} |")
    out += ["", PAPER_LABEL + ":", f"(source: {paper_source})", "| model | win-rate vs Davinci003 (%) | n |", "|---|---|---|"]
    out += [f"| {p['model']} | {f(p['win_rate'], p['standard_error'])} | {p['n']} |" for p in paper]
    return "\n".join(out)
