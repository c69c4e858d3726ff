"""``alpaca-farm benchmark`` end to end on a tiny random policy, a handful of instructions and the cheap "longer"
evaluator: the table, the run directory, resume without regeneration, the leaderboard, presets and refusals."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from alpaca_farm_env.agents import list_agents, make_agent
from alpaca_farm_env.benchmark.config import BenchmarkConfig, eval_subset, load_preset
from alpaca_farm_env.cli import main
from alpaca_farm_env.data import EVAL_DATASET_COUNTS, load_eval_set

N_EVAL = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def preset_file(tmp_path_factory) -> Path:
    cfg = load_preset("tiny").to_dict()
    cfg.update(policy="tiny-llama", annotator="longer", n_eval=N_EVAL, name="t")
    cfg["generation"].update(max_new_tokens=12, batch_size=4)
    cfg["methods"] = {"base": {}, "sft": {}, "best_of_n": {"n": 3, "temperature": 1.0, "reward": "length"}}
    cfg["stages"]["sft"].update(max_steps=2, max_length=128)  # a tiny SFT stage: the test is about the harness
    path = tmp_path_factory.mktemp("preset") / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _bench(capsys, preset, run_dir, *extra):
    rc = main(["benchmark", "--preset", str(preset), "--run-dir", str(run_dir), "--no-progress", *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


@pytest.mark.slow
def test_end_to_end_and_resume(preset_file, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "r1"
    out = _bench(capsys, preset_file, run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    assert [m["method"] for m in res["methods"]] == ["base", "sft", "best_of_n"]
    assert res["n_eval"] == N_EVAL and res["evaluator"] == "longer" and res["compare_to"] == "sft"
    base, sft, bon = res["methods"]
    assert res["stage_seconds"]["sft"] > 0 and sft["settings"]["stages"]["sft"] == bon["settings"]["stages"]["sft"]
    assert "stages" not in base["settings"] or not base["settings"]["stages"]  # base: the untrained policy
    first_run = json.loads((run_dir / "last_run.json").read_text())
    for m in res["methods"]:
        assert first_run[m["method"]]["n_generated"] == N_EVAL and first_run[m["method"]]["n_generations_cached"] == 0
        assert m["metrics"]["n_total"] == N_EVAL
        outs = json.loads(Path(m["outputs_path"]).read_text())
        assert len(outs) == N_EVAL and set(outs[0]) == {"instruction", "output", "generator", "dataset"}
        ann = json.loads(Path(m["annotations_path"]).read_text())
        assert len(ann) == N_EVAL and all(a["output_2"] in {o["output"] for o in outs} for a in ann)
        # the win-rate is the one of the stored annotations ("longer": output_2 wins iff it is longer)
        wins = sum(len(a["output_2"]) > len(a["output_1"]) for a in ann)
        assert m["metrics"]["n_wins"] == wins
    # best_of_n reranks 3 samples by length: never shorter on average than the single sample, and says so
    assert bon["reward"] == "length" and "reward=length" in bon["label"] and "n=3" in bon["label"]
    assert bon["vs_baseline"]["baseline"] == "sft" and bon["vs_baseline"]["n_total"] == N_EVAL
    assert (run_dir / "best_of_n" / "annotations_vs_sft.json").is_file()
    # beside it, the paired difference of the two win-rates vs Davinci003 on the same instructions
    assert bon["paired"]["baseline"] == "sft" and bon["paired"]["n"] == N_EVAL and sft["paired"] is None
    assert bon["paired"]["diff"] == pytest.approx(bon["metrics"]["win_rate"] - sft["metrics"]["win_rate"])
    # the printed table and results.md
    md = (run_dir / "results.md").read_text()
    assert "win-rate vs Davinci003" in md and "win-rate vs sft" in md and "(baseline)" in md
    assert "paired Δ vs sft" in md and "separable from sft" in md
    wr = f"{bon['metrics']['win_rate']:.1f} ± {bon['metrics']['standard_error']:.1f}"
    assert wr in out and wr in md and f"| {N_EVAL} |" in md
    # the measured time of each method and shared stage
    assert "| fit (s) | generate + annotate (s) |" in md
    sft_row = next(line for line in md.splitlines() if line.startswith("| sft |"))
    assert sft_row.split("|")[-3].strip() == f"{sft['seconds']['fit']:.1f}"
    assert "shared stages (s to build): sft " in md
    assert (run_dir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    board = json.loads((tmp_path / "runs" / "leaderboard.json").read_text())
    assert len(board) == 3

    # resume: nothing regenerated or re-annotated, same numbers, no duplicate leaderboard rows
    gen_files = {m: (run_dir / m / "generations.jsonl") for m in ("base", "sft", "best_of_n")}
    mtimes = {m: p.stat().st_mtime_ns for m, p in gen_files.items()}
    board1 = json.loads((tmp_path / "runs" / "leaderboard.json").read_text())
    _bench(capsys, preset_file, run_dir)
    res2 = json.loads((run_dir / "results.json").read_text())
    again = json.loads((run_dir / "last_run.json").read_text())
    for m in res2["methods"]:
        c = again[m["method"]]
        assert c["n_generated"] == 0 and c["n_generations_cached"] == N_EVAL and c["n_annotations_cached"] == N_EVAL
    # the rerun's results are the first run's, labels, rewards and times included (the creation time aside)
    assert {**res2, "created": None} == {**res, "created": None}
    board2 = json.loads((tmp_path / "runs" / "leaderboard.json").read_text())
    assert [{**r, "created": None} for r in board2] == [{**r, "created": None} for r in board1]
    assert {m: p.stat().st_mtime_ns for m, p in gen_files.items()} == mtimes
    assert len(json.loads((tmp_path / "runs" / "leaderboard.json").read_text())) == 3

    # a run killed mid-way: drop the last generations of sft, the rerun regenerates only those
    lines = gen_files["sft"].read_text().splitlines()
    gen_files["sft"].write_text("\n".join(lines[:4]) + "\n{\"key\": \"torn")
    _bench(capsys, preset_file, run_dir, "--methods", "sft")
    res3 = json.loads((run_dir / "results.json").read_text())
    third = json.loads((run_dir / "last_run.json").read_text())["sft"]
    assert third["n_generated"] == N_EVAL - 4 and third["n_generations_cached"] == 4
    assert res3["methods"][0]["metrics"]["n_total"] == N_EVAL

    # the leaderboard prints our runs and the paper's numbers as a separate labelled reference
    assert main(["leaderboard", "--runs-root", str(tmp_path / "runs")]) == 0
    lb = capsys.readouterr().out
    runs_part, paper_part = lb.split("Reference only")
    assert "best_of_n" in runs_part and "SFT 10k" not in runs_part
    assert "†" not in runs_part  # every row from a run of the same n
    assert "SFT 10k" in paper_part and "35.9" in paper_part

    # and `evaluate` reads a run's outputs and annotations
    assert main(["evaluate", "--annotations", bon["annotations_path"], "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["win_rate"] == pytest.approx(bon["metrics"]["win_rate"]) and ev["reference"] == "alpacafarm"


def test_refuses_to_rerank_with_the_evaluator(preset_file, tmp_path, capsys):
    rc = main(["benchmark", "--preset", str(preset_file), "--run-dir", str(tmp_path / "x"), "--reward", "annotator",
               "--annotator", "noisy_pooled"])
    assert rc == 2 and "evaluator" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before any work
    with pytest.raises(ValueError, match="evaluator"):
        make_agent("best_of_n", policy="tiny-llama", reward="annotator", reward_kwargs={"annotator": "longer"}, evaluator="longer")


def test_presets_and_subset(data_dir):
    methods = ["base", "sft", "best_of_n", "expert_iteration", "binary_feedme", "binary_reward_conditioning", "dpo",
               "ppo", "quark", "grpo", "rloo", "online_dpo"]
    assert set(methods) <= set(list_agents())
    tiny, paper = load_preset("tiny"), load_preset("paper")
    assert tiny.policy == "smollm2-135m" and tiny.annotator == "pooled" and tiny.compare_to == "sft"
    assert list(tiny.methods) == ["base", "sft", "binary_feedme"]  # trained SFT vs base, and a preference learner
    # the paper preset's policy is SFT10k (stages.sft: null): no base row, its sft row is the given policy
    assert list(paper.methods) == methods[1:] and paper.stages["sft"] is None
    assert paper.stages["preferences"]["annotator"] == "alpaca_farm_pool_noisy"
    assert paper.n_eval is None and paper.generation.max_new_tokens == 300 and paper.generation.temperature == 0.7
    assert paper.policy is None and paper.methods["best_of_n"]["temperature"] == 1.0
    assert paper.methods["ppo"] == {} and paper.methods["quark"] == {}  # PPOConfig() / QuarkConfig(): the scripts'
    cpu_all = load_preset("cpu_all")  # every method on 2 cores, the reward model on the SFT trunk
    cpu_all.validate("cpu_all")
    assert list(cpu_all.methods) == methods and cpu_all.stages["reward_model"]["backbone"] == "sft"
    ev = load_eval_set("alpacafarm", data_dir)
    sub = eval_subset(ev, 50, seed=0)
    assert len(sub) == 50 and sub == eval_subset(ev, 50, seed=0) and sub != eval_subset(ev, 50, seed=1)
    counts = Counter(r["dataset"] for r in sub)
    for name, total in EVAL_DATASET_COUNTS.items():  # proportional to the 805's composition, within rounding
        assert abs(counts[name] - 50 * total / 805) < 1
    with pytest.raises(ValueError, match="unknown key"):
        BenchmarkConfig.from_dict({"polciy": "x"})


def test_paper_preset_needs_a_policy(capsys, tmp_path):
    assert main(["benchmark", "--preset", "paper", "--run-dir", str(tmp_path / "p")]) == 2
    assert "--policy" in capsys.readouterr().err


def test_best_of_n_keeps_the_highest_reward_sample():
    agent = make_agent("best_of_n", policy="tiny-llama", n=5, reward="length", max_new_tokens=16, seed=3)
    obs = [{"instruction": f"Say something about the number {i}.", "input": ""} for i in range(3)]
    out = agent.respond(obs)
    assert len(out) == 3 and agent.n_generate_calls == 1
    for text, scores in zip(out, agent.last_scores):
        assert len(scores) == 5 and len(text) == max(scores)  # length reward = chars of the kept sample
    assert agent.respond(obs) == out  # seeded by (seed, prompts)
