"""The Table-2-style table (markdown / console) and the bar chart of a benchmark run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..metrics import excludes_zero

REFERENCE_NAME = "Davinci003"


def _fmt(m: dict[str, Any] | None) -> str:
    if not m or m.get("win_rate") is None:
        return "—"
    se = m.get("standard_error")
    return f"{m['win_rate']:.1f} ± {se:.1f}" if se is not None else f"{m['win_rate']:.1f}"


def paired_entry(baseline: str, stats: dict[str, Any]) -> dict[str, Any]:
    """The ``"paired"`` entry of a method in ``results.json`` from :func:`~..metrics.paired_difference`'s ``stats``:
    ``baseline`` (the ``compare_to`` method), ``diff`` and ``standard_error`` (percentage points of win-rate vs
    Davinci003, method minus baseline, per instruction), ``ci95`` ([low, high], percentile bootstrap), ``n`` (the
    instructions labelled for both) and ``separable`` (the interval excludes 0)."""
    return {"baseline": baseline, "diff": stats["diff"], "standard_error": stats["standard_error"],
            "ci95": [stats["ci_low"], stats["ci_high"]], "n": stats["n"],
            "separable": excludes_zero(stats["ci_low"], stats["ci_high"])}


def _fmt_paired(p: dict[str, Any] | None) -> str:
    if not p or p.get("diff") is None:
        return "—"
    se, (lo, hi) = p.get("standard_error"), p.get("ci95") or (None, None)
    text = f"{p['diff']:+.1f}" + (f" ± {se:.1f}" if se is not None else "")
    return text + (f" [{lo:+.1f}, {hi:+.1f}]" if lo is not None and hi is not None else "")


def markdown_table(results: dict[str, Any]) -> str:
    """The results table: method, reward, win-rate ± SE vs Davinci003; when there is a baseline method
    (``compare_to``), its head-to-head win-rate against the baseline's outputs, the paired difference of win-rates vs
    Davinci003 (± SE [95% bootstrap interval], percentage points) and whether the method is separable from the
    baseline (the interval excludes 0); then n, average length and times. Returns the markdown text with its
    caption."""
    base = results.get("compare_to")
    head = ["method", "reward", f"win-rate vs {REFERENCE_NAME} (%)"]
    if base:
        head += [f"win-rate vs {base} (%)", f"paired Δ vs {base} (pp, ± SE [95% CI])", f"separable from {base}"]
    head += ["n", "avg length (chars)", "fit (s)", "generate + annotate (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for m in results["methods"]:
        cells = [m["label"], m.get("reward") or "—", _fmt(m["metrics"])]
        if base and m["method"] == base:
            cells += ["(baseline)", "(baseline)", "(baseline)"]
        elif base:
            paired = m.get("paired")
            cells += [_fmt(m.get("vs_baseline")), _fmt_paired(paired),
                      "—" if not paired else ("yes" if paired.get("separable") else "no")]
        al = m["metrics"].get("avg_length")
        secs = m.get("seconds") or {}
        cells += [str(m["metrics"]["n_total"]), f"{al:.0f}" if al is not None else "—",
                  _secs(secs.get("fit")), _secs(secs.get("generate_and_annotate"))]
        lines.append("| " + " | ".join(cells) + " |")
    caption = (f"policy {results['policy']}, evaluator {results['evaluator']}, reference {REFERENCE_NAME} "
               f"({results['reference']}), {results['n_eval']} instructions")
    if base:
        caption += (f"\n\npaired Δ: per instruction, the method's score vs {REFERENCE_NAME} minus {base}'s (a win 1, a "
                    "draw 0.5), averaged; the interval is a percentile bootstrap over instructions; separable: the "
                    "interval excludes 0")
    stages = results.get("stage_seconds") or {}
    if stages:  # the time each stage's build took, when it was built; a method's fit includes the stages it built
        caption += "\n\nshared stages (s to build): " + ", ".join(f"{k} {_secs(v)}" for k, v in stages.items())
    from .selection import selection_caption

    from .paper_order import table2_caption

    chosen = selection_caption(results)  # the kept checkpoint each RL method was evaluated at
    if chosen:
        caption += "\n\n" + chosen
    order = table2_caption(results)
    if order:
        caption += "\n\n" + order
    return "\n".join(lines) + "\n\n" + caption


def _secs(x: Any) -> str:
    return "—" if x is None else f"{float(x):.1f}"


def bar_chart(results: dict[str, Any], path: str | Path) -> str:
    """PNG of the win-rates with standard-error bars: a row per method, in the table's order, one bar per baseline
    (Davinci003, and ``compare_to`` when set); horizontal, so that a dozen method names stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    labels = [m["method"] for m in methods]
    series = [(f"vs {REFERENCE_NAME}", [m["metrics"] for m in methods])]
    if results.get("compare_to"):
        series.append((f"vs {results['compare_to']}", [m.get("vs_baseline") or {} for m in methods]))
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.34 * len(methods) * len(series) ** 0.5))
    for k, (name, ms) in enumerate(series):
        ys = [i + (k - (len(series) - 1) / 2) * height for i in range(len(methods))]
        # no bar where there is no number (e.g. the baseline method against itself)
        xs = [m["win_rate"] if m.get("win_rate") is not None else float("nan") for m in ms]
        es = [m["standard_error"] if m.get("standard_error") is not None else 0.0 for m in ms]
        ax.barh(ys, xs, height, xerr=es, capsize=3, label=name)
    ax.axvline(50, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(methods)), labels, fontsize=8)
    ax.invert_yaxis()  # the table's first row on top
    ax.set_xlabel("win-rate (%) ± standard error")
    ax.set_xlim(0, 100)
    ax.set_title(f"{results['preset']}: evaluator {results['evaluator']}, n={results['n_eval']}", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def overoptimization_chart(points: list[dict[str, Any]], path: str | Path, title: str = "") -> str:
    """PNG of the over-optimization curves (paper Fig. 5): x = mean proxy reward, y = win-rate with standard-error
    bars, one line per method, each point labelled with its n or PPO step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for method, label, fmt in (("best_of_n", "best-of-n (n)", "o-"), ("ppo", "PPO (step)", "s-")):
        pts = sorted((p for p in points if p["method"] == method), key=lambda p: p["x"])
        if not pts:
            continue
        xs, ys = [p["proxy_reward"] for p in pts], [p["win_rate"] for p in pts]
        es = [p["standard_error"] if p.get("standard_error") is not None else 0.0 for p in pts]
        ax.errorbar(xs, ys, yerr=es, fmt=fmt, capsize=3, label=label)
        for p, x, y in zip(pts, xs, ys):
            ax.annotate(f"{p['x']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("mean proxy reward (reward model)")
    ax.set_ylabel("win-rate vs Davinci003 (%)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
