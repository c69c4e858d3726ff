"""The one win-rate function against an independent pandas computation and the alpaca_eval conventions."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alpaca_farm_env.data import DataFormatError
from alpaca_farm_env.metrics import win_rate


def _pandas_reference(prefs):
    """alpaca_eval 0.6.6 helpers.describe_head2head, re-done with pandas (as upstream does)."""
    s = pd.Series([np.nan if p is None or p == "" else float(p) for p in prefs], dtype=float).replace({0.0: 1.5})
    n_draws = int((s == 1.5).sum())
    s = s.dropna() - 1
    return dict(win_rate=s.mean() * 100, standard_error=s.sem() * 100, n_wins=int((s > 0.5).sum()),
                n_wins_base=int((s < 0.5).sum()), n_draws=n_draws, n_total=len(s))


def test_matches_pandas_on_mixed_encodings():
    rng = np.random.default_rng(0)
    prefs = list(rng.choice([1, 2, 1.5, 0], size=200)) + list(rng.uniform(1, 2, size=50)) + [None, float("nan"), "", "2", "1.0", "0"]
    got = win_rate(prefs, lengths=["ab", "abcd"])
    ref = _pandas_reference(prefs)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-9), k
    assert got["n_total"] == 250 + 3  # None / NaN / "" dropped
    assert got["avg_length"] == 3.0


def test_draws_count_half_and_legacy_zero():
    r = win_rate([2, 1, 1.5, 0])
    assert r["win_rate"] == pytest.approx(50.0)
    assert (r["n_wins"], r["n_wins_base"], r["n_draws"], r["n_total"]) == (1, 1, 2, 4)
    # sem with ddof=1: values 1, 0, .5, .5 -> std = sqrt(1/6)
    assert r["standard_error"] == pytest.approx(100 * math.sqrt(1 / 6) / 2)


def test_string_preferences_and_lengths_as_ints():
    r = win_rate(["2", "2.0", "1"], lengths=[10, 20])
    assert r["win_rate"] == pytest.approx(200 / 3)
    assert r["avg_length"] == 15.0


def test_empty_and_single():
    r = win_rate([None])
    assert r["n_total"] == 0 and math.isnan(r["win_rate"]) and r["avg_length"] is None
    assert math.isnan(win_rate([2])["standard_error"])


@pytest.mark.parametrize("bad", [3, -1, "yes"])
def test_out_of_range_is_an_error(bad):
    with pytest.raises(DataFormatError):
        win_rate([1, bad])
