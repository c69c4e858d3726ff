"""The prompt rows an environment (and the judge's degenerate-response suite) steps through, for any split.

:func:`load_rows` turns ``split`` / ``reference`` / ``indices`` / ``max_examples`` into rows with ``instruction``,
``input``, ``prompt`` (the AlpacaFarm template) and ``reference_output``: the eval split's Davinci003 reference, or a
training split's own ``output``.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .loader import SPLITS, load_eval_set, load_split
from .prompts import format_prompt

EVAL_SPLIT = "eval"
SPLIT_CHOICES = (EVAL_SPLIT, *SPLITS)


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
    positions = list(range(len(raw)))
    if indices is not None:
        if isinstance(indices, (str, bytes)) or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                                        for i in indices):
            raise ConfigError(f"indices must be a sequence of integer row positions, got {indices!r}")
        positions = [int(i) for i in indices]
        bad = [i for i in positions if not 0 <= i < len(raw)]
        if bad:
            raise IndexError(f"indices {bad[:5]} out of range for split {split!r} with {len(raw)} rows")
    if max_examples is not None:
        if not isinstance(max_examples, int) or isinstance(max_examples, bool) or max_examples < 1:
            raise ConfigError(f"max_examples must be an integer >= 1 (or None for all rows), got {max_examples!r} "
                              f"({type(max_examples).__name__})")
        positions = positions[:max_examples]
    if not positions:
        raise ValueError(f"no examples selected from split {split!r} (indices={indices!r}, max_examples={max_examples})")
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

