"""``alpaca-farm evaluate``: exact reproduction of the AlpacaEval-1 leaderboard from stored GPT-4 annotations, and
annotation of model outputs with a real annotator, including missing/extra rows."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_farm_env.cli import main
from alpaca_farm_env.data import list_annotated_models, load_eval_set


def _run_json(capsys, *argv):
    rc = main(["evaluate", *argv, "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out), out.err


def test_reproduces_alpaca_eval_gpt4_leaderboard(data_dir, capsys):
    board = {r[""]: r for r in csv.DictReader(open(data_dir / "leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv"))}
    models = list_annotated_models(data_dir)
    assert len(models) >= 15
    for model in models:
        path = data_dir / "alpaca_eval_results" / model / "alpaca_eval_gpt4" / "annotations.json"
        res, _ = _run_json(capsys, "--annotations", str(path), "--data-dir", str(data_dir))
        row = board[model]
        assert res["win_rate"] == pytest.approx(float(row["win_rate"]), abs=0.01), model
        assert res["standard_error"] == pytest.approx(float(row["standard_error"]), abs=0.01), model
        assert res["n_total"] == int(float(row["n_total"])), model
        assert res["n_wins"] == int(float(row["n_wins"])) and res["n_draws"] == int(float(row["n_draws"])), model
        assert int(res["avg_length"]) == int(row["avg_length"]), model
        assert res["reference"] == "alpacaeval1"  # detected from output_1
        assert res["annotations_path"] == str(path.resolve())


def test_console_script_json(data_dir):
    model = list_annotated_models(data_dir)[0]
    path = data_dir / "alpaca_eval_results" / model / "alpaca_eval_gpt4" / "annotations.json"
    exe = Path(sys.executable).with_name("alpaca-farm")
    proc = subprocess.run([str(exe), "evaluate", "--annotations", str(path), "--json"], capture_output=True, text=True,
                          check=True)
    res = json.loads(proc.stdout)
    assert set(res) >= {"win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "avg_length",
                        "annotator", "reference", "annotations_path"}


def test_annotate_outputs_reports_missing_and_extra(data_dir, tmp_path, capsys):
    ev = load_eval_set("alpacafarm", data_dir)
    # alpaca_eval layout (input folded into instruction) for the first 6 rows with an input, AlpacaFarm layout else
    with_input = [e for e in ev if e["input"]][:6]
    plain = [e for e in ev if not e["input"]][:6]
    rows = [{"instruction": e["instruction"] + "\n\n" + e["input"], "output": e["reference_output"] + " More.", "generator": "m"} for e in with_input]
    rows += [{"instruction": e["instruction"], "input": "", "output": "ok", "generator": "m"} for e in plain]
    rows.append({"instruction": "Not an eval instruction at all.", "input": "", "output": "x", "generator": "m"})
    f = tmp_path / "outs.json"
    f.write_text(json.dumps(rows))
    res, err = _run_json(capsys, "--model-outputs", str(f), "--annotator", "longer", "--output-dir", str(tmp_path / "o"))
    assert res["n_total"] == 12 and res["n_extra"] == 1 and res["n_missing"] == len(ev) - 12
    assert res["extra"][0]["instruction"] == "Not an eval instruction at all."
    assert "not in the 'alpacafarm' eval set" in err and "no model output" in err
    # the 6 longer outputs win against the reference under "longer"; "ok" loses unless the reference is shorter
    expect = 6 + sum(1 for e in plain if len(e["reference_output"]) < 2)
    assert res["n_wins"] == expect and res["annotator"] == "longer" and res["reference"] == "alpacafarm"
    ann = json.loads(Path(res["annotations_path"]).read_text())
    assert len(ann) == 12 and all(a["output_1"] != a["output_2"] for a in ann)
    # the stored annotations recompute to the same numbers, and a rerun reuses them (no annotator call)
    again, _ = _run_json(capsys, "--annotations", res["annotations_path"], "--reference", "alpacafarm")
    assert again["win_rate"] == pytest.approx(res["win_rate"]) and again["n_total"] == 12
    rerun, _ = _run_json(capsys, "--model-outputs", str(f), "--annotator", "longer", "--output-dir", str(tmp_path / "o"))
    assert rerun["n_from_cache"] == 12 and rerun["win_rate"] == res["win_rate"]


def test_needs_an_input(capsys):
    assert main(["evaluate", "--json"]) == 2
    assert "--model-outputs" in capsys.readouterr().err


def test_lazy_annotator_is_built_only_when_a_pair_needs_annotating(tmp_path):
    """A resumed run whose annotations are all cached never builds the evaluator (the offline judge loads its
    answer bank in seconds); a run with missing rows builds it once."""
    from alpaca_farm_env.annotators import make_annotator
    from alpaca_farm_env.benchmark.evaluation import LazyAnnotator, annotate_pairs

    built = []

    def factory():
        built.append(1)
        return make_annotator("longer")

    pairs = [{"instruction": f"Say {i}.", "input": "", "output_1": "x" * (i + 1), "output_2": "yy"} for i in range(5)]
    cache = tmp_path / "annotations.json"
    rows, n_cached = annotate_pairs(LazyAnnotator(factory), pairs, cache_path=cache, annotator_id="longer", progress=False)
    assert built == [1] and n_cached == 0 and [r["preference"] for r in rows] == [2.0, 1.5, 1.0, 1.0, 1.0]
    rows2, n_cached2 = annotate_pairs(LazyAnnotator(factory), pairs, cache_path=cache, annotator_id="longer", progress=False)
    assert built == [1] and n_cached2 == 5 and rows2 == rows
