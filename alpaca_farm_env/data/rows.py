"""The prompt rows an environment (and the judge's degenerate-response suite) steps through, for any split.

:func:`load_rows` turns ``split`` / ``reference`` / ``indices`` / ``max_examples`` into rows with ``instruction``,
``input``, ``prompt`` (the AlpacaFarm template) and ``reference_output``: the eval split's Davinci003 reference, or a
training split's own ``output``. :func:`prompt_rows` does the same for a user's own prompts (a list of dicts, a JSON
or JSONL file, or a ``datasets.Dataset``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .loader import SPLITS, load_eval_set, load_split
from .prompts import format_prompt

EVAL_SPLIT = "eval"
SPLIT_CHOICES = (EVAL_SPLIT, *SPLITS)
CUSTOM_SPLIT = "custom"  # the split label of an env built on a user's own prompts
PROMPT_FIELDS = ("instruction", "input", "reference_output")


def load_rows(
    split: str = "unlabeled",
    *,
    data_dir: str | os.PathLike | None = None,
    reference: str = "alpacafarm",
    indices: Sequence[int] | None = None,
    max_examples: int | None = None,
) -> list[dict[str, Any]]:
    """Rows ``{instruction, input, prompt, reference_output, dataset, row_index}`` for an env.

    ``split="eval"``: the 805 evaluation instructions with the chosen Davinci003 ``reference``; any training split
    (``unlabeled``, ``sft``, ``preference``, ``val``): the split's ``output`` is the reference. ``indices`` selects rows
    (positions in the split), then ``max_examples`` keeps the first ones of that selection.
    """
    if split == EVAL_SPLIT:
        raw = load_eval_set(reference, data_dir)
        refs = [r["reference_output"] for r in raw]
    elif split in SPLITS:
        raw = load_split(split, data_dir)
        refs = [r["output"] for r in raw]
    else:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLIT_CHOICES)}")
    positions = _select(len(raw), indices, max_examples, f"split {split!r}")
    return [
        {
            "instruction": raw[i]["instruction"],
            "input": raw[i]["input"],
            "prompt": format_prompt(raw[i]["instruction"], raw[i]["input"]),
            "reference_output": refs[i],
            "dataset": raw[i].get("dataset", split),
            "row_index": i,
        }
        for i in positions
    ]



def _select(n: int, indices: Sequence[int] | None, max_examples: int | None, what: str) -> list[int]:
    """The positions of ``n`` rows that ``indices`` then ``max_examples`` keep; raises on a bad selection."""
    positions = list(range(n))
    if indices is not None:
        if isinstance(indices, (str, bytes)) or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                                        for i in indices):
            raise ConfigError(f"indices must be a sequence of integer row positions, got {indices!r}")
        positions = [int(i) for i in indices]
        bad = [i for i in positions if not 0 <= i < n]
        if bad:
            raise IndexError(f"indices {bad[:5]} out of range for {what} with {n} rows")
    if max_examples is not None:
        if not isinstance(max_examples, int) or isinstance(max_examples, bool) or max_examples < 1:
            raise ConfigError(f"max_examples must be an integer >= 1 (or None for all rows), got {max_examples!r} "
                              f"({type(max_examples).__name__})")
        positions = positions[:max_examples]
    if not positions:
        raise ValueError(f"no examples selected from {what} (indices={indices!r}, max_examples={max_examples})")
    return positions


# ------------------------------------------------------------------------------------------------ own prompts
def prompt_rows(prompts: Any, *, indices: Sequence[int] | None = None,
                max_examples: int | None = None) -> list[dict[str, Any]]:
    """Rows for an env on a user's own prompts, in the layout of :func:`load_rows`.

    ``prompts``: a list (or tuple) of dicts, a path to a ``.json`` file (a list of dicts) or a ``.jsonl`` file (a dict
    per line), or a ``datasets.Dataset``. Each row has ``instruction`` (a non-empty string), optionally ``input`` (a
    string; default "") and ``reference_output`` (a string; default None: rewards that compare with a reference refuse
    the env at ``make()``); other keys are ignored (``dataset`` is kept as the row's source label). ``indices`` and
    ``max_examples`` select as in :func:`load_rows`. Raises :class:`ConfigError` naming the first bad row."""
    items, where = _read_prompts(prompts)
    positions = _select(len(items), indices, max_examples, where)
    rows = []
    for i in positions:
        row = _check_prompt_row(items[i], i, where)
        rows.append({**row, "prompt": format_prompt(row["instruction"], row["input"]),
                     "dataset": str(items[i].get("dataset") or CUSTOM_SPLIT), "row_index": i})
    return rows


def _read_prompts(prompts: Any) -> tuple[list[Any], str]:
    """The items of ``prompts`` and a name for them in errors."""
    if isinstance(prompts, (str, os.PathLike)):
        return _read_prompt_file(Path(prompts)), f"prompts file {str(prompts)!r}"
    if hasattr(prompts, "column_names") and callable(getattr(prompts, "to_list", None)):  # a datasets.Dataset
        return prompts.to_list(), "the prompts dataset"
    if isinstance(prompts, (list, tuple)):
        if not prompts:
            raise ConfigError("prompts is empty: give at least one row with an 'instruction'")
        return list(prompts), "prompts"
    raise ConfigError(f"prompts must be a list of dicts, a .json/.jsonl path or a datasets.Dataset, got "
                      f"{type(prompts).__name__}")


def _read_prompt_file(path: Path) -> list[Any]:
    if not path.is_file():
        raise ConfigError(f"prompts file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"prompts file {str(path)!r} line {n}: not JSON ({e.msg})") from None
        return items
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"prompts file {str(path)!r}: not JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(items, list):
            raise ConfigError(f"prompts file {str(path)!r}: expected a JSON list of rows, got "
                              f"{type(items).__name__}")
        return items
    raise ConfigError(f"prompts file {str(path)!r}: expected a .json or .jsonl file")


def _check_prompt_row(item: Any, i: int, where: str) -> dict[str, Any]:
    """``{instruction, input, reference_output}`` of one prompt row; raises naming row ``i`` of ``where``."""
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where} row {i}: expected a dict with 'instruction', got {type(item).__name__}")
    if "instruction" not in item:
        hint = "; rename 'output' to 'reference_output'" if "output" in item else ""
        raise ConfigError(f"{where} row {i}: missing 'instruction' (its keys: {sorted(map(str, item))}){hint}")
    out = {"instruction": item["instruction"], "input": item.get("input") or "",
           "reference_output": item.get("reference_output")}
    for key in PROMPT_FIELDS:
        value = out[key]
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where} row {i}: {key!r} must be a string, got {type(value).__name__}")
    if not out["instruction"].strip():
        raise ConfigError(f"{where} row {i}: 'instruction' is empty")
    return out
