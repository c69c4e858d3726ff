"""The judge on instructions it has never seen: leave-instruction-out folds and the cross-annotation set.

Real data and real components throughout (the packaged all-MiniLM-L6-v2 encoder, the package's own training functions,
the real GPT-4 annotation files); the leave-instruction-out run is small (3 models, 40 pairs each, 3 folds) and its
cache lives in a temporary directory.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from alpaca_farm_env.annotators.base import FunctionAnnotator
from alpaca_farm_env.annotators.heuristics import LongerWinsAnnotator
from alpaca_farm_env.judge import evaluation, training_data
from alpaca_farm_env.judge.answer_bank import AnswerBank
from alpaca_farm_env.judge.config import JudgeConfig
from alpaca_farm_env.judge.evaluation import (
    evaluate_cross_annotation,
    evaluate_leave_instruction_out,
    instruction_fold,
    leave_instruction_out_split,
    load_cross_annotations,
)
from alpaca_farm_env.judge.features import full_prompt
from alpaca_farm_env.metrics import win_rate
from alpaca_farm_env.utils import json_safe

MODELS = ("falcon-40b-instruct", "gpt4", "phi-2")  # weak, strong and mid GPT-4 win-rates
N_PAIRS = 40
N_FOLDS = 3


@pytest.fixture(scope="module")
def small(tmp_path_factory, data_dir):
    cache = tmp_path_factory.mktemp("judge_cache")
    old = os.environ.get("ALPACA_FARM_CACHE")
    os.environ["ALPACA_FARM_CACHE"] = str(cache)
    try:
        config = JudgeConfig(models=MODELS, max_pairs_per_model=N_PAIRS)
        rows = training_data.load_training_pairs(data_dir, MODELS, N_PAIRS)
        yield config, rows
    finally:
        if old is None:
            os.environ.pop("ALPACA_FARM_CACHE", None)
        else:
            os.environ["ALPACA_FARM_CACHE"] = old


@pytest.fixture(scope="module")
def lio(small, data_dir):
    config, _ = small
    return evaluate_leave_instruction_out(data_dir, config, n_folds=N_FOLDS, progress=False)


def _prompt(r):
    return full_prompt(r["instruction"], r.get("input", "") or "")


def test_folds_are_a_stable_partition_of_instructions(small):
    _, rows = small
    folds_of = {}
    for k in range(N_FOLDS):
        train, test = leave_instruction_out_split(rows, k, N_FOLDS)
        assert test and train and len(train) + len(test) == len(rows)
        for r in test:
            folds_of.setdefault(_prompt(r), set()).add(k)
    assert set(folds_of) == {_prompt(r) for r in rows}  # every instruction is held out ...
    assert all(len(ks) == 1 for ks in folds_of.values())  # ... in exactly one fold, with all its pairs
    # the same folds in another process with another hash salt: the split never depends on hash()
    prompts = sorted({(r["instruction"], r.get("input", "")) for r in rows})
    code = ("import json, sys; from alpaca_farm_env.judge.evaluation import instruction_fold; "
            f"print(json.dumps([instruction_fold(i, x, {N_FOLDS}) for i, x in json.load(sys.stdin)]))")
    for salt in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(prompts), capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONHASHSEED": salt})
        assert json.loads(out.stdout) == [instruction_fold(i, x, N_FOLDS) for i, x in prompts]


@pytest.mark.slow
def test_held_out_instructions_give_no_training_pair_negative_or_bank_entry(small, lio):
    config, rows = small
    for k in range(N_FOLDS):
        train, test = leave_instruction_out_split(rows, k, N_FOLDS)
        held_out = {_prompt(r) for r in test}
        held_out_answers = {r["output_2"] for r in test}
        assert not held_out & {_prompt(r) for r in train}
        # what train_artifact fits on: the training rows plus the synthetic negatives built from them
        fitted, weights = training_data.with_synthetic(train, config)
        assert len(fitted) > len(train) and not held_out & {_prompt(r) for r in fitted}
        assert not held_out_answers & {r["output_2"] for r in fitted if r.get("synthetic") == "mismatched"}
        bank = AnswerBank(train)
        assert not any(bank.has(r["instruction"], r["input"]) for r in test)
        assert not held_out & set(bank.by_prompt)
    folds = lio["folds"]
    assert [f["fold"] for f in folds] == list(range(N_FOLDS))
    assert sum(f["n_pairs_held_out"] for f in folds) == len(rows)
    for f in folds:
        train, test = leave_instruction_out_split(rows, f["fold"], N_FOLDS)
        assert f["n_pairs_train"] == len(train) and f["n_pairs_held_out"] == len(test)
        assert f["held_out_in_training"] == 0 and f["held_out_in_bank"] == 0 and f["bank_instructions"] > 0
        assert f["scored_by"] == {"global": len(test)}  # the judge itself routed them to its global head


@pytest.mark.slow
def test_lio_result_keys_ranges_and_longer_baseline(small, lio):
    _, rows = small
    assert lio["n_folds"] == N_FOLDS and lio["n_pairs"] == len(rows) and sorted(lio["models"]) == sorted(MODELS)
    assert lio["n_instructions"] == len({_prompt(r) for r in rows})
    json.dumps(json_safe(lio), allow_nan=False)  # JSON-serialisable
    for key in ("judge", "longer"):
        s = lio["summary"][key]
        assert set(s) >= {"agreement", "agreement_mid", "mae", "spearman", "mae_calibrated", "spearman_calibrated",
                          "prefers_longer", "agreement_gpt4_prefers_longer", "agreement_gpt4_prefers_shorter"}
        assert 0.0 <= s["agreement"] <= 1.0 and 0.0 <= s["mae"] <= 100.0 and -1.0 <= s["spearman"] <= 1.0
        for m in MODELS:
            v = lio["per_model"][m]
            assert 0.0 <= v[f"{key}_win_rate"] <= 100.0 and 0.0 <= v[f"{key}_agreement"] <= 1.0
    assert set(lio["targets"]) == {"agreement_over_longer", "agreement_mid_over_longer", "spearman"}
    assert all(isinstance(t["met"], bool) for t in lio["targets"].values())
    gain, s = lio["targets"]["agreement_over_longer"], lio["summary"]
    assert gain["value"] == pytest.approx(100 * (s["judge"]["agreement"] - s["longer"]["agreement"]), abs=1e-9)
    assert gain["se"] > 0 and lio["targets"]["spearman"]["value"] == s["judge"]["spearman"]
    # "longer wins" independently: the `longer` annotator on the same pairs, agreement counted by hand
    longer = LongerWinsAnnotator().compare([r["instruction"] for r in rows], [r["input"] for r in rows],
                                           [r["output_1"] for r in rows], [r["output_2"] for r in rows])
    hits = [(a.preference == r["preference"]) if a.preference != 1.5 else 0.5
            for a, r in zip(longer, rows) if r["preference"] in (1.0, 2.0)]
    assert lio["summary"]["longer"]["agreement"] == pytest.approx(np.mean(hits), abs=1e-12)
    assert lio["summary"]["longer"]["prefers_longer"] == 1.0
    for m in MODELS:
        prefs = [a.preference for a, r in zip(longer, rows) if r["model"] == m]
        assert lio["per_model"][m]["longer_win_rate"] == pytest.approx(win_rate(prefs)["win_rate"], abs=1e-9)
        gold = [r["preference"] for r in rows if r["model"] == m]
        assert lio["per_model"][m]["gpt4_win_rate"] == pytest.approx(win_rate(gold)["win_rate"], abs=1e-9)
    # judged pairs: each held out once, every per-model win-rate over all of that model's pairs
    assert sum(v["n"] for v in lio["per_model"].values()) == len(rows)


@pytest.mark.slow
def test_cli_lio_json(small, data_dir, capsys):
    from alpaca_farm_env.cli import main

    rc = main(["judge", "eval", "--protocol", "lio", "--folds", "2", "--data-dir", str(data_dir), "--models", *MODELS,
               "--max-pairs", "20", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_folds"] == 2 and sorted(res["models"]) == sorted(MODELS) and res["n_pairs"] <= 3 * 20
    assert {f["held_out_in_training"] for f in res["folds"]} == {0}


# ----------------------------------------------------------------------------------------- cross-annotation set
def _raw_cross_annotations(data_dir: Path):
    paths = sorted((data_dir / "crossannotation_set").glob("gpt4_*_annotations_seed*.json"))
    return [p.name for p in paths], [json.loads(p.read_text()) for p in paths]


def test_cross_annotation_labels_majority_and_gpt4_self_agreement(data_dir):
    rows, labels, names = load_cross_annotations(data_dir)
    raw_names, raw = _raw_cross_annotations(data_dir)
    assert names == raw_names and len(names) == 8 and labels.shape == (648, 8) and len(rows) == 648
    votes = [[int(f[i]["preference"]) for f in raw] for i in range(648)]
    np.testing.assert_array_equal(labels, np.asarray(votes, float))
    # majority of 8 by counting votes; 4-4 is a tie (1.5)
    expected = [2.0 if c[2] > c[1] else 1.0 if c[1] > c[2] else 1.5 for c in map(Counter, votes)]
    np.testing.assert_array_equal(evaluation.majority_label(labels), expected)
    # GPT-4 against itself, leave-one-out: annotation j against the majority of the other 7 (never a tie)
    hits = []
    for j in range(8):
        for v in votes:
            others = Counter(v[:j] + v[j + 1:])
            assert others[1] != others[2]
            hits.append(v[j] == (2 if others[2] > others[1] else 1))
    report = evaluation._cross_report({}, labels, evaluation.longer_preference(rows))
    assert report["gpt4"]["agreement_loo_majority"] == pytest.approx(np.mean(hits), abs=1e-12)
    assert report["n_majority_ties"] == expected.count(1.5)
    # two seeds of one GPT-4 config agree as the data README says (b1 84.3 %, b5 78.6 %, all 648 pairs)
    b1 = [i for i, n in enumerate(names) if n.startswith("gpt4_b1")]
    b5 = [i for i, n in enumerate(names) if n.startswith("gpt4_b5")]
    assert round(100 * evaluation.pairwise_agreement(labels[:, b1]), 1) == 84.3
    assert round(100 * evaluation.pairwise_agreement(labels[:, b5]), 1) == 78.6


def test_cross_annotation_pairs_outside_the_eval_set_and_a_judge_report(data_dir):
    def shorter_wins(instructions, inputs, outputs_1, outputs_2, seed=0):
        return [1.5 if len(a) == len(b) else 2.0 if len(b) < len(a) else 1.0 for a, b in zip(outputs_1, outputs_2)]

    res = evaluate_cross_annotation(data_dir, [FunctionAnnotator(shorter_wins, name="shorter")], progress=False)
    # outside the eval set: independently, from the raw files
    _, raw = _raw_cross_annotations(data_dir)
    eval_rows = json.loads((data_dir / "alpacafarm_eval" / "alpacafarm_paper_reference_text_davinci_003.json").read_text())
    eval_keys = {(r["instruction"], r["input"]) for r in eval_rows}
    outside = [r for r in raw[0] if (r["instruction"], r["input"]) not in eval_keys]
    assert res["n_outside_eval"] == len(outside) == 327 and res["n_pairs"] == 648
    # none of them is an instruction the distilled judge trains on (the eval instructions of the annotation files)
    train = {_prompt(r) for r in training_data.load_training_pairs(data_dir)}
    assert res["n_outside_in_training"] == 0 and not train & {_prompt(r) for r in outside}
    json.dumps(json_safe(res), allow_nan=False)
    out = res["subsets"]["outside_eval"]
    assert out["n_pairs"] == 327 and res["subsets"]["inside_eval"]["n_pairs"] == 321
    # "longer wins" against GPT-4's majority, by hand (ties of the majority excluded)
    hits = []
    for i, r in enumerate(raw[0]):
        if (r["instruction"], r["input"]) in eval_keys:
            continue
        c = Counter(int(f[i]["preference"]) for f in raw)
        if c[1] == c[2]:
            continue
        l1, l2 = len(r["output_1"]), len(r["output_2"])
        hits.append(0.5 if l1 == l2 else float((2 if l2 > l1 else 1) == (2 if c[2] > c[1] else 1)))
    assert len(hits) == out["n_pairs"] - out["n_majority_ties"]
    assert out["longer"]["agreement_majority"] == pytest.approx(np.mean(hits), abs=1e-12)
    # "shorter wins" is its mirror image on every figure
    for fig in ("agreement_majority", "agreement_loo_majority", "agreement_single"):
        assert out["shorter"][fig] == pytest.approx(1.0 - out["longer"][fig], abs=1e-12)
    assert out["shorter"]["prefers_longer"] == 0.0 and out["longer"]["prefers_longer"] == 1.0
    g = out["gpt4"]
    assert 0.5 < g["agreement_single"] < g["agreement_loo_majority"] < 1.0
    t = res["targets"]["shorter"]
    assert t["met"] is False and t["se"] > 0
    assert t["agreement_over_longer"] == pytest.approx(
        100 * (out["shorter"]["agreement_majority"] - out["longer"]["agreement_majority"]), abs=1e-9)
