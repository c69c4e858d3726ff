"""How a run's method order compares with the paper's: Spearman's rank correlation of the methods' win-rates vs
Davinci003 with Table 2's simulated column (Dubois et al., 2023, Table 2: methods trained on p_sim^ann, evaluated
by p_sim^eval, win-rate vs Davinci003 on the 805 evaluation instructions)."""
from __future__ import annotations

from typing import Any, Mapping

TABLE2_SIMULATED: dict[str, tuple[str, float]] = {
    # method name in a preset: (Table 2 row, simulated win-rate %)
    "ppo": ("PPO", 46.8),
    "best_of_n": ("Best-of-n", 45.0),
    "expert_iteration": ("Expert Iteration", 41.9),
    "sft": ("SFT 10k", 36.7),
    "binary_feedme": ("Binary FeedME", 36.6),
    "quark": ("Quark", 35.6),
    "binary_reward_conditioning": ("Binary Reward Conditioning", 32.4),
    "base": ("LLaMA 7B", 11.3),
}
"""Table 2's rows for the methods of the pipeline; DPO, GRPO and RLOO are not in it."""

MIN_METHODS = 3


def table2_order(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """Spearman's rho between a run's win-rates vs Davinci003 and Table 2's simulated column, over the methods both
    have (by method name, :data:`TABLE2_SIMULATED`). Returns ``{"spearman", "n", "methods": [{"method", "paper_row",
    "paper", "ours"}]}``, or None when the run's reference is not the paper's (``alpacafarm``) or fewer than
    :data:`MIN_METHODS` methods are in both."""
    from scipy.stats import spearmanr

    if results.get("reference") != "alpacafarm":
        return None
    rows = [{"method": m["method"], "paper_row": TABLE2_SIMULATED[m["method"]][0],
             "paper": TABLE2_SIMULATED[m["method"]][1], "ours": m["metrics"]["win_rate"]}
            for m in results["methods"]
            if m["method"] in TABLE2_SIMULATED and m["metrics"].get("win_rate") is not None]
    if len(rows) < MIN_METHODS:
        return None
    rho = spearmanr([r["paper"] for r in rows], [r["ours"] for r in rows]).statistic
    return {"spearman": None if rho != rho else round(float(rho), 3), "n": len(rows), "methods": rows}


def table2_caption(results: Mapping[str, Any]) -> str:
    """One paragraph for ``results.md``: the Spearman figure and the paper's order next to the run's; "" when
    :func:`table2_order` is None."""
    order = table2_order(results)
    if order is None:
        return ""
    ranked = sorted(order["methods"], key=lambda r: -r["paper"])
    pairs = ", ".join(f"{r['method']} {r['ours']:.1f} ({r['paper']:.1f})" for r in ranked)
    rho = "undefined (a constant column)" if order["spearman"] is None else f"{order['spearman']:+.2f}"
    return (f"method order vs the paper's Table 2 (simulated column): Spearman rho {rho} over {order['n']} methods; "
            f"ours (paper's), in the paper's order: {pairs}")
