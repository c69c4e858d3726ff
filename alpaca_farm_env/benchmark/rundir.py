"""The run directory's own files: whose run it is (``config.json``), and each method's generation cache
(``<method>/generations.jsonl``) and record (``<method>/record-<key>.json``). See ``runner.py`` for the layout."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, IO

from ..errors import ConfigError
from ..tracking import untracked
from ..utils import digest
from .config import BenchmarkConfig


def default_run_dir(cfg: BenchmarkConfig, evaluator_identity: str = "") -> Path:
    """``<runs_root>/<name>-<digest of what determines the results>``: the same settings resume the same run, and a
    changed evaluator (its identity: configuration, artifacts, training data) starts a new one. ``n_select`` is left
    out: it keys the outputs of the methods that select by it, as a method's settings do."""
    key = untracked(cfg.to_dict())  # tracking (report_to, anywhere) changes no result
    key.pop("runs_root", None)
    key.pop("n_select", None)
    key["evaluator_identity"] = evaluator_identity
    return Path(cfg.runs_root) / f"{cfg.name}-{digest(key)[:10]}"


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("methods", "runs_root", "n_select")}


def check_run_dir_owner(run_dir: Path, cfg: BenchmarkConfig, force: bool) -> None:
    """Refuse a run dir whose ``config.json`` holds other settings: its caches, results and leaderboard rows belong
    to that preset. Running a subset or a superset of the same preset's methods is the same run."""
    path = run_dir / "config.json"
    if force or not path.is_file():
        return
    try:
        old = untracked(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # an unreadable record is replaced
    new = untracked(cfg.to_dict())  # another report_to is the same run
    differs = sorted(k for k in set(_comparable(old)) | set(_comparable(new)) if old.get(k) != new.get(k))
    shared = set(old.get("methods") or {}) & set(new["methods"])
    differs += [f"methods.{m}" for m in sorted(shared) if old["methods"][m] != new["methods"][m]]
    if differs:
        raise ConfigError(f"{run_dir} holds a run of preset {old.get('name')!r} with other settings "
                          f"({', '.join(differs)}) than preset {cfg.name!r}; pass another --run-dir, or --force to "
                          "replace that run")


def append_generations(f: IO[str], new: list[tuple[str, dict[str, Any], str]], done: dict[str, str]) -> None:
    """Append ``(key, eval row, output)`` lines to the open generations cache ``f`` and to ``done``, then fsync (a
    killed run keeps every finished batch)."""
    for key, row, text in new:
        done[key] = text
        f.write(json.dumps({"key": key, "instruction": row["instruction"], "input": row["input"], "output": text},
                           ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def read_record(path: Path) -> dict[str, Any] | None:
    """A method's record (reward label, fit and generation seconds); None when missing or unreadable, in which case
    the method is built and fitted again rather than reported without it."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(rec, dict) and isinstance(rec.get("seconds"), dict) and "reward" in rec:
            return rec
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    return None


def read_generations(path: Path) -> dict[str, str]:
    """Cached outputs by key; a torn last line (killed mid-write) is ignored."""
    done: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                done[rec["key"]] = rec["output"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return done

