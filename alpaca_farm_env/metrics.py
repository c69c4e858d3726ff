"""THE win-rate: one function, used by ``evaluate``, ``benchmark``, the leaderboard and everything else.

Follows alpaca_eval 0.6.6 ``metrics/winrate.py::get_winrate`` -> ``metrics/helpers.py::AbsoluteScoringRule
.describe_head2head`` exactly:

* ``preference`` is 1 (reference/``output_1`` wins), 2 (model/``output_2`` wins), 1.5 or the legacy 0 (draw), or a
  float in [1, 2] (weighted annotators); strings are parsed with ``float()``;
* unlabeled rows (None / NaN / empty string) are dropped from every count except ``n_draws``' source (they are never
  draws, so it does not matter);
* ``win_rate = 100 * mean(p - 1)`` (a draw counts one half), ``standard_error = 100 * sem(p - 1)`` with the sample
  standard deviation (ddof=1, pandas ``Series.sem``);
* ``n_wins = #(p - 1 > 0.5)``, ``n_wins_base = #(p - 1 < 0.5)``, ``n_draws = #(p in {0, 1.5})``, ``n_total`` = labeled
  rows;
* ``avg_length``: mean length in characters of the model outputs (alpaca_eval ``main.py`` computes it over all model
  outputs, labeled or not; it stores ``int()`` of it, we keep the float).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from .preference import parse_preference

__all__ = ["win_rate", "WIN_RATE_FIELDS"]

WIN_RATE_FIELDS = ("win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "avg_length")


def win_rate(preferences: Iterable[Any], lengths: Sequence[int | str] | None = None) -> dict[str, Any]:
    """Win-rate of ``output_2`` (the model) against ``output_1`` (the reference).

    ``preferences``: values in alpaca_eval's encoding (see module docstring); an out-of-range value raises
    ``DataFormatError`` (a ``ValueError``) rather than being silently dropped.
    ``lengths``: output lengths, or the output strings themselves, of the model outputs (any number; ``None`` gives
    ``avg_length = None``).

    Returns ``win_rate``, ``standard_error`` (NaN when fewer than 2 labeled rows; ``win_rate`` is NaN for none),
    ``n_wins``, ``n_wins_base``, ``n_draws``, ``n_total`` (ints) and ``avg_length`` (float or None).
    """
    scores: list[float] = []
    n_draws = 0
    for i, value in enumerate(preferences):
        p = parse_preference(value, "<preferences>", i)  # 0 -> 1.5, NaN/None/"" -> None, range-checked
        if p is None:
            continue
        if p == 1.5:  # helpers._idcs_draws: p == 1.5 or p == 0 (the latter already mapped to 1.5)
            n_draws += 1
        scores.append(p - 1.0)
    n = len(scores)
    mean = math.fsum(scores) / n if n else float("nan")
    if n >= 2:
        var = math.fsum((s - mean) ** 2 for s in scores) / (n - 1)  # ddof=1, as pandas' sem
        sem = math.sqrt(var) / math.sqrt(n)
    else:
        sem = float("nan")
    avg_length = None
    if lengths is not None:
        lens = [len(x) if isinstance(x, str) else int(x) for x in lengths]
        avg_length = (sum(lens) / len(lens)) if lens else None
    return {
        "win_rate": 100.0 * mean,
        "standard_error": 100.0 * sem,
        "n_wins": sum(1 for s in scores if s > 0.5),
        "n_wins_base": sum(1 for s in scores if s < 0.5),
        "n_draws": n_draws,
        "n_total": n,
        "avg_length": avg_length,
    }
