"""Paired statistics: the paired difference of two methods' win-rates vs Davinci003 on the same instructions (its
standard error and percentile-bootstrap interval), the ``paired`` entry of ``results.json`` and the separable column of
``results.md`` on a tiny benchmark run, and the leaderboard's n marking."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from alpaca_farm_env.benchmark import leaderboard
from alpaca_farm_env.benchmark.config import load_preset
from alpaca_farm_env.benchmark.report import markdown_table, paired_entry
from alpaca_farm_env.cli import main
from alpaca_farm_env.errors import DataFormatError
from alpaca_farm_env.metrics import excludes_zero, paired_difference, win_rate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the maths ---------------------------------------------------------------------------------------------------

def test_hand_computed_case():
    # per instruction d = (pa - 1) - (pb - 1): 1, 0, 0, 0.5 (a draw scores 0.5; the legacy 0 is a draw too)
    r = paired_difference([2, 1, 2, 0], [1, 1, 2, 1])
    assert r["n"] == 4 and r["diff"] == pytest.approx(37.5)
    # deviations .625, -.375, -.375, .125: sum of squares .6875, variance .6875 / 3, sem = sqrt(.6875 / 3) / 2
    assert r["standard_error"] == pytest.approx(100 * math.sqrt(0.6875 / 3) / 2)
    # d = (0, 1): the bootstrap means are 0, .5 or 1 with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5%
    # quantiles of 2000 resamples are 0 and 1
    two = paired_difference([1, 2], [1, 1])
    assert (two["diff"], two["ci_low"], two["ci_high"], two["n"]) == (50.0, 0.0, 100.0, 2)


def test_matches_an_independent_computation():
    rng = np.random.default_rng(1)
    a = list(rng.choice([1, 2, 1.5], size=300)) + list(rng.uniform(1, 2, size=20))
    b = list(rng.choice([1, 2, 1.5], size=300)) + list(rng.uniform(1, 2, size=20))
    r = paired_difference(a, b)
    d = pd.Series(a, dtype=float) - pd.Series(b, dtype=float)
    assert r["diff"] == pytest.approx(100 * d.mean()) and r["standard_error"] == pytest.approx(100 * d.sem())
    # with every row labelled, the paired difference is the difference of the two win-rates
    assert r["diff"] == pytest.approx(win_rate(a)["win_rate"] - win_rate(b)["win_rate"])
    # the paired SE is below the unpaired one here (independent columns: about the same, never much above)
    assert r["standard_error"] < 1.1 * math.hypot(win_rate(a)["standard_error"], win_rate(b)["standard_error"])


def test_interval_is_the_bootstrap_of_a_binomial():
    """d in {0, 1} with 30 ones in 100: a bootstrap mean is Binomial(100, .3) / 100; its 2.5% and 97.5% quantiles
    are computed exactly here, and 2000 resamples land within a point of them."""
    a = [2] * 30 + [1] * 70
    r = paired_difference(a, [1] * 100)
    pmf = [math.comb(100, k) * 0.3 ** k * 0.7 ** (100 - k) for k in range(101)]
    cdf = np.cumsum(pmf)
    lo, hi = int(np.searchsorted(cdf, 0.025)), int(np.searchsorted(cdf, 0.975))
    assert abs(r["ci_low"] - lo) <= 1.0 and abs(r["ci_high"] - hi) <= 1.0
    assert r["ci_low"] > 0 and excludes_zero(r["ci_low"], r["ci_high"])  # 30 wins, no losses: separable


@pytest.mark.parametrize("trial", range(20))
def test_properties(trial):
    rng = np.random.default_rng(trial)
    n = int(rng.integers(2, 60))
    a, b = list(rng.choice([1, 2, 1.5], size=n)), list(rng.choice([1, 2, 1.5], size=n))
    r = paired_difference(a, b)
    assert r["ci_low"] <= r["diff"] <= r["ci_high"]  # the interval contains the mean difference
    assert r == paired_difference(a, b)  # seeded from the data: a rerun gives the same interval
    swapped = paired_difference(b, a, seed=7)
    same_seed = paired_difference(a, b, seed=7)
    assert swapped["diff"] == pytest.approx(-same_seed["diff"])  # A - B = -(B - A), interval mirrored
    assert swapped["ci_low"] == pytest.approx(-same_seed["ci_high"]) and swapped["ci_high"] == pytest.approx(
        -same_seed["ci_low"])
    same = paired_difference(a, a)  # identical inputs: 0, with a zero-width interval, never separable
    assert (same["diff"], same["standard_error"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0, 0.0)
    assert not paired_entry("sft", same)["separable"]


def test_unlabelled_rows_are_dropped_pairwise_and_lengths_must_match():
    r = paired_difference([2, None, 1, float("nan")], [1, 2, None, 1])
    assert r["n"] == 1 and r["diff"] == 100.0 and math.isnan(r["standard_error"])
    assert r["ci_low"] == r["ci_high"] == 100.0
    none = paired_difference([None], [2])
    assert none["n"] == 0 and math.isnan(none["diff"]) and not excludes_zero(none["ci_low"], none["ci_high"])
    with pytest.raises(ValueError, match="paired"):
        paired_difference([1, 2], [1])
    with pytest.raises(DataFormatError):
        paired_difference([1, 3], [1, 1])


def test_excludes_zero_and_paired_entry():
    assert excludes_zero(0.1, 5) and excludes_zero(-5, -0.1)
    assert not excludes_zero(0.0, 5) and not excludes_zero(-1, 1) and not excludes_zero(None, 1)
    e = paired_entry("sft", {"diff": 3.0, "standard_error": 1.0, "ci_low": 1.0, "ci_high": 5.0, "n": 9})
    assert e == {"baseline": "sft", "diff": 3.0, "standard_error": 1.0, "ci95": [1.0, 5.0], "n": 9, "separable": True}


def test_results_md_marks_the_separable_methods():
    def method(name, paired):
        return {"method": name, "label": name, "reward": None, "paired": paired, "seconds": {},
                "metrics": {"win_rate": 40.0, "standard_error": 5.0, "n_total": 9, "avg_length": 100.0},
                "vs_baseline": None if paired is None else {"win_rate": 55.0, "standard_error": 4.0}}

    results = {"compare_to": "sft", "policy": "p", "evaluator": "e", "reference": "alpacafarm", "n_eval": 9,
               "methods": [method("sft", None),
                           method("ppo", {"diff": 4.0, "standard_error": 1.5, "ci95": [1.0, 7.0], "separable": True}),
                           method("dpo", {"diff": 1.0, "standard_error": 1.5, "ci95": [-2.0, 4.0],
                                          "separable": False})]}
    md = markdown_table(results)
    head = md.splitlines()[0].split(" | ")
    col = head.index("separable from sft")
    assert head[col - 1] == "paired Δ vs sft (pp, ± SE [95% CI])" and head[col - 2] == "win-rate vs sft (%)"
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in md.splitlines()[2:] if line.startswith("| ")}
    assert rows["ppo"][col] == "yes" and rows["dpo"][col] == "no" and rows["sft"][col] == "(baseline)"
    assert rows["ppo"][col - 1] == "+4.0 ± 1.5 [+1.0, +7.0]" and rows["dpo"][col - 1] == "+1.0 ± 1.5 [-2.0, +4.0]"
    assert rows["ppo"][col - 2] == "55.0 ± 4.0"  # the head-to-head column stays beside it
    no_base = markdown_table({**results, "compare_to": None})
    assert "separable" not in no_base.splitlines()[0]


# --- a tiny benchmark run ----------------------------------------------------------------------------------------

N_EVAL = 16  # with 64 new tokens, some outputs are longer than their short Davinci003 references


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    cfg = load_preset("tiny").to_dict()
    cfg.update(policy="tiny-llama", annotator="longer", n_eval=N_EVAL, name="paired", compare_to="base")
    cfg["generation"].update(max_new_tokens=64, batch_size=8)
    # "again" is the base agent under another name: the same outputs, so a paired difference of exactly 0
    cfg["methods"] = {"base": {}, "again": {"agent": "base"},
                      "best_of_n": {"n": 8, "temperature": 1.0, "reward": "length"}}
    cfg["stages"]["sft"].update(max_steps=2, max_length=128)
    root = tmp_path_factory.mktemp("paired")
    preset = root / "paired.yaml"
    preset.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = root / "runs" / "r"
    assert main(["benchmark", "--preset", str(preset), "--run-dir", str(run_dir), "--no-progress"]) == 0
    return run_dir


def _scores(path: str | Path) -> list[float]:
    return [a["preference"] for a in json.loads(Path(path).read_text())]


@pytest.mark.slow
def test_results_json_and_md_carry_the_paired_difference(tiny_run):
    res = json.loads((tiny_run / "results.json").read_text())
    by = {m["method"]: m for m in res["methods"]}
    assert res["compare_to"] == "base" and by["base"]["paired"] is None  # the baseline is not paired with itself
    base_prefs = _scores(by["base"]["annotations_path"])
    for name in ("again", "best_of_n"):
        p = by[name]["paired"]
        assert set(p) == {"baseline", "diff", "standard_error", "ci95", "n", "separable"} and p["baseline"] == "base"
        # recomputed from the stored annotations vs Davinci003, instruction by instruction
        again = paired_difference(_scores(by[name]["annotations_path"]), base_prefs)
        assert p["n"] == again["n"] == N_EVAL
        assert p["diff"] == pytest.approx(again["diff"]) and p["ci95"] == pytest.approx([again["ci_low"],
                                                                                            again["ci_high"]])
        assert p["diff"] == pytest.approx(by[name]["metrics"]["win_rate"] - by["base"]["metrics"]["win_rate"])
        assert p["separable"] == (p["ci95"][0] > 0 or p["ci95"][1] < 0)
        assert p["ci95"][0] <= p["diff"] <= p["ci95"][1]
        # the head-to-head column is still there, judged against the baseline's outputs
        assert by[name]["vs_baseline"]["baseline"] == "base" and (tiny_run / name / "annotations_vs_base.json").is_file()
    # best-of-8 by length wins on some instructions the single sample loses: a non-zero difference was checked
    assert by["best_of_n"]["paired"]["diff"] > 0
    # the same agent under two names answers alike: a difference of 0 with a zero-width interval, not separable
    outs = {m: [o["output"] for o in json.loads(Path(by[m]["outputs_path"]).read_text())] for m in ("base", "again")}
    assert outs["again"] == outs["base"]
    assert by["again"]["paired"]["diff"] == 0 and by["again"]["paired"]["ci95"] == [0, 0]
    assert by["again"]["paired"]["separable"] is False
    md = (tiny_run / "results.md").read_text()
    head = md.splitlines()[0].split(" | ")
    col = head.index("separable from base")
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in md.splitlines()[2:] if line.startswith("| ")}
    assert rows["base"][col] == "(baseline)" and rows["again"][col] == "no"
    bon = next(v for k, v in rows.items() if k.startswith("best_of_n"))
    assert bon[col] == ("yes" if by["best_of_n"]["paired"]["separable"] else "no")
    assert bon[col - 1].startswith(f"{by['best_of_n']['paired']['diff']:+.1f} ± ")
    # the leaderboard rows keep the run's n and the paired figures
    board = leaderboard.load_leaderboard(tiny_run.parent)
    assert {r["n_eval"] for r in board} == {N_EVAL}
    row = next(r for r in board if r["method"] == "best_of_n")
    assert row["paired_diff"] == by["best_of_n"]["paired"]["diff"] and row["paired_baseline"] == "base"


# --- the leaderboard's n ----------------------------------------------------------------------------------------

def _results(run_dir: str, n_eval: int, win_rate_: float) -> dict:
    return {"run_dir": run_dir, "preset": "t", "created": "now", "policy": "p", "evaluator": "longer",
            "reference": "alpacafarm", "n_eval": n_eval, "methods": [{"method": "sft", "label": "sft", "metrics": {
                "n_total": n_eval, "win_rate": win_rate_, "standard_error": 5.0, "avg_length": 4.0}}]}


def _runs_table(out: str) -> dict[str, list[str]]:
    """The runs table's rows by run name, as their cells."""
    rows = [line.split(" | ") for line in out.split("Reference only")[0].splitlines() if line.startswith("| t |")]
    return {cells[-1].rstrip(" |"): cells for cells in rows}


def test_leaderboard_marks_rows_of_another_n(tmp_path, capsys):
    for name, n, w in (("a", 96, 40.0), ("b", 96, 45.0), ("small", 6, 60.0)):
        leaderboard.add_run(tmp_path, _results(f"{tmp_path}/{name}", n, w))
    # a row from an older leaderboard, written without n
    rows = json.loads((tmp_path / "leaderboard.json").read_text())
    rows.append({k: v for k, v in rows[0].items() if k not in ("n", "n_eval")} | {"run_dir": f"{tmp_path}/old"})
    (tmp_path / "leaderboard.json").write_text(json.dumps(rows))
    assert main(["leaderboard", "--runs-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = _runs_table(out)
    n_col = 4
    assert table["a"][n_col] == "96" and table["b"][n_col] == "96"  # the most common n: unmarked
    assert table["small"][n_col] == "6 †" and table["old"][n_col] == "unknown ?"
    assert "† n differs from 96 (the most common n in this table)" in out and "? n unknown" in out
    # against the small run, the others are the ones marked
    assert main(["leaderboard", "--runs-root", str(tmp_path), "--against", "small"]) == 0
    out = capsys.readouterr().out
    table = _runs_table(out)
    assert table["small"][n_col] == "6" and table["a"][n_col] == "96 †" and "† n differs from 6 (run small's n)" in out
    assert main(["leaderboard", "--runs-root", str(tmp_path), "--against", "nope"]) == 2
    assert "--against 'nope'" in capsys.readouterr().err
    # every row of one size: nothing marked, no footnote
    only = tmp_path / "only"
    leaderboard.add_run(only, _results(f"{only}/x", 96, 40.0))
    leaderboard.add_run(only, _results(f"{only}/y", 96, 50.0))
    assert main(["leaderboard", "--runs-root", str(only)]) == 0
    out = capsys.readouterr().out
    assert "†" not in out and all(c[n_col] == "96" for c in _runs_table(out).values())


def test_leaderboard_counts_are_checked(tmp_path, capsys):
    leaderboard.add_run(tmp_path, _results(f"{tmp_path}/a", 96, 40.0))
    rows = json.loads((tmp_path / "leaderboard.json").read_text())
    (tmp_path / "leaderboard.json").write_text(json.dumps([dict(rows[0], n_eval="96")]))
    assert main(["leaderboard", "--runs-root", str(tmp_path)]) == 2
    assert "row 0, field 'n_eval'" in capsys.readouterr().err
