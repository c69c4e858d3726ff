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

:func:`paired_difference` compares two methods judged against the same reference on the same instructions: the mean
of the per-instruction differences of their scores (``p - 1``), its standard error and a percentile-bootstrap
interval over instructions. Pairing removes the instruction-to-instruction variance that two independent win-rate
standard errors carry, which is what lets a small eval set tell two methods apart.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable, Sequence

import numpy as np

from .preference import parse_preference

__all__ = ["win_rate", "WIN_RATE_FIELDS", "paired_difference", "excludes_zero", "N_BOOTSTRAP"]

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


N_BOOTSTRAP = 2000  # bootstrap resamples of the paired interval


def paired_difference(
    preferences_a: Sequence[Any], preferences_b: Sequence[Any], *, n_boot: int = N_BOOTSTRAP, seed: int | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired win-rate difference of method A minus method B, both judged against the same reference.

    ``preferences_a[i]`` and ``preferences_b[i]`` are the two methods' preferences (alpaca_eval's encoding, as
    :func:`win_rate`) on the same instruction ``i``; an instruction is kept only when both are labelled. Per
    instruction ``d_i = (p_a - 1) - (p_b - 1)`` (a score in [0, 1], a draw 0.5).

    The interval is the percentile bootstrap: ``n_boot`` resamples of the instructions with replacement, the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of their mean differences. ``seed`` seeds the
    resampling; ``None`` derives it from a hash of the paired scores, so the same inputs always give the same
    interval (Python's ``hash`` is salted per process, so it is not used).

    Returns ``diff`` (``100 * mean(d)``, percentage points, as :func:`win_rate`'s ``win_rate``), ``standard_error``
    (``100 * sem(d)``, sample standard deviation ddof=1; NaN when ``n < 2``), ``ci_low`` and ``ci_high`` (percentage
    points; NaN when ``n == 0``) and ``n`` (the instructions labelled for both). Raises ``ValueError`` when the two
    sequences differ in length (they must be paired row by row).
    """
    if len(preferences_a) != len(preferences_b):
        raise ValueError(f"paired_difference: {len(preferences_a)} preferences for A but {len(preferences_b)} for B; "
                         "they must be paired instruction by instruction")
    a = [parse_preference(v, "<preferences_a>", i) for i, v in enumerate(preferences_a)]
    b = [parse_preference(v, "<preferences_b>", i) for i, v in enumerate(preferences_b)]
    d = np.array([pa - pb for pa, pb in zip(a, b) if pa is not None and pb is not None], dtype=np.float64)
    n = int(d.size)
    nan = float("nan")
    if n == 0:
        return {"diff": nan, "standard_error": nan, "ci_low": nan, "ci_high": nan, "n": 0}
    mean = math.fsum(d.tolist()) / n
    sem = math.sqrt(math.fsum(((d - mean) ** 2).tolist()) / (n - 1)) / math.sqrt(n) if n >= 2 else nan
    if seed is None:
        seed = int.from_bytes(hashlib.sha256(np.round(d, 12).tobytes()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(int(n_boot), n))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return {"diff": 100.0 * mean, "standard_error": 100.0 * sem, "ci_low": 100.0 * float(lo),
            "ci_high": 100.0 * float(hi), "n": n}


def excludes_zero(ci_low: float | None, ci_high: float | None) -> bool:
    """Whether the interval ``[ci_low, ci_high]`` lies strictly on one side of 0 (the two methods are separable);
    False when either end is missing or NaN."""
    if ci_low is None or ci_high is None or ci_low != ci_low or ci_high != ci_high:
        return False
    return ci_low > 0 or ci_high < 0
