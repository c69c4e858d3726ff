"""The method order of a run against Table 2's simulated column: Spearman's rho over the methods both have, in
results.md when the run uses the paper's reference."""
from __future__ import annotations

import pytest

from alpaca_farm_env.benchmark.paper_order import TABLE2_SIMULATED, table2_caption, table2_order
from alpaca_farm_env.benchmark.report import markdown_table


def _results(win_rates: dict[str, float], reference: str = "alpacafarm") -> dict:
    methods = [{"method": m, "label": m, "metrics": {"win_rate": w, "standard_error": 1.0, "n_total": 8,
                                                      "avg_length": 10.0}} for m, w in win_rates.items()]
    return {"reference": reference, "methods": methods, "policy": "p", "evaluator": "e", "n_eval": 8}


def _spearman_by_hand(xs, ys):
    rank = lambda v: {x: i for i, x in enumerate(sorted(v))}  # no ties in these columns
    rx, ry = rank(xs), rank(ys)
    n = len(xs)
    return 1 - 6 * sum((rx[x] - ry[y]) ** 2 for x, y in zip(xs, ys)) / (n * (n * n - 1))


def test_the_paper_order_gives_rho_one_and_the_reverse_minus_one():
    same = {m: w - 5.0 for m, (_, w) in TABLE2_SIMULATED.items()}
    assert table2_order(_results(same))["spearman"] == 1.0
    reverse = {m: 100.0 - w for m, (_, w) in TABLE2_SIMULATED.items()}
    assert table2_order(_results(reverse))["spearman"] == -1.0


def test_rho_over_the_shared_methods_matches_the_formula_and_ignores_others():
    ours = {"sft": 10.0, "ppo": 12.0, "quark": 14.0, "best_of_n": 9.0, "dpo": 99.0, "grpo": 1.0}
    order = table2_order(_results(ours))
    assert order["n"] == 4 and {r["method"] for r in order["methods"]} == {"sft", "ppo", "quark", "best_of_n"}
    names = ["sft", "ppo", "quark", "best_of_n"]
    expected = _spearman_by_hand([TABLE2_SIMULATED[m][1] for m in names], [ours[m] for m in names])
    assert order["spearman"] == pytest.approx(expected, abs=1e-3) and expected == pytest.approx(-0.4)


def test_no_figure_without_the_papers_reference_or_with_too_few_methods():
    assert table2_order(_results({"sft": 1.0, "ppo": 2.0, "quark": 3.0}, reference="alpacaeval1")) is None
    assert table2_order(_results({"sft": 1.0, "ppo": 2.0, "dpo": 3.0})) is None
    assert table2_caption(_results({"sft": 1.0, "ppo": 2.0})) == ""


def test_results_md_carries_the_figure():
    text = markdown_table(_results({"base": 5.0, "sft": 10.0, "ppo": 12.0}))
    assert "Spearman rho +1.00 over 3 methods" in text
    assert "ppo 12.0 (46.8), sft 10.0 (36.7), base 5.0 (11.3)" in text
