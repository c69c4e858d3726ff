"""The whole AlpacaFarm pipeline as one command on a tiny random model and a cheap local annotator: each shared stage
(SFT, preference collection through AlpacaFarmPairwise-v0, reward model) is built once, reused across methods and
reruns, and every bundled method runs through the env."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alpaca_farm_env.benchmark.config import load_preset
from alpaca_farm_env.cli import main

METHODS = ["base", "sft", "best_of_n", "expert_iteration", "binary_feedme", "binary_reward_conditioning", "dpo",
           "ppo", "quark", "grpo", "rloo", "online_dpo"]
# the byte tokenizer of tiny-llama makes the Alpaca template ~200 tokens: query_len must hold it
RL = {"rollout_batch_size": 4, "step_batch_size": 4, "rollout_per_device_batch_size": 4, "step_per_device_batch_size": 2,
      "query_len": 512, "response_len": 6, "total_steps": 2, "save_steps": 1, "eval_steps": 0, "n_eval_prompts": 0,
      "learning_rate": 1e-3, "warmup_steps": 0}  # no warm-up: with it, step 1's rate is 0 and its policy is sft's
TRL_RL = {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 6, "max_prompt_length": 512,
          "max_steps": 2, "save_steps": 1, "eval_steps": 0, "learning_rate": 1e-2}  # GRPO and RLOO (TRL's names)
ONLINE_DPO = {"per_device_train_batch_size": 2, "max_new_tokens": 6, "max_prompt_length": 512, "max_steps": 2,
              "save_steps": 1, "eval_steps": 0, "learning_rate": 1e-2}  # a pair per prompt: 4 completions a step


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _preset(tmp_path: Path, temperature: float = 0.7) -> Path:
    cfg = load_preset("paper").to_dict()  # the paper preset's code path, with a tiny model and a local annotator
    cfg.update(name="pipe", policy="tiny-llama", annotator="longer", n_eval=4, n_select=4, compare_to=None)
    cfg["generation"].update(max_new_tokens=6, batch_size=4, temperature=temperature)
    # max_length holds the ~200-token Alpaca prompt of the byte tokenizer and some output: shorter, every target is
    # cut off and SFT, FeedME, reward conditioning and expert iteration train nothing
    small_sft = {"max_steps": 2, "max_length": 256, "per_device_batch_size": 4, "gradient_accumulation_steps": 1,
                 "learning_rate": 1e-3}
    cfg["methods"] = {
        "base": {}, "sft": {},
        "best_of_n": {"n": 2},  # reranks with the reward-model stage
        "expert_iteration": {"config": {"best_of_n": {"n": 2, "max_new_tokens": 6}, "sft": small_sft, "n_prompts": 4}},
        "binary_feedme": {"config": small_sft},
        "binary_reward_conditioning": {"config": small_sft},
        "dpo": {"config": {"max_steps": 2, "max_length": 512, "per_device_batch_size": 2,
                           "gradient_accumulation_steps": 1, "learning_rate": 1e-3}},
        # evaluated at the kept checkpoint with the best val win-rate (select: val, the default); under `longer` every
        # checkpoint of the tiny policy ties at 0 on val, so step 1 is evaluated
        "ppo": {"config": {**RL, "noptepochs": 1, "eval_steps": 2}},
        "quark": {"config": RL},
        "grpo": {"config": TRL_RL},
        "rloo": {"config": TRL_RL},
        "online_dpo": {"config": ONLINE_DPO},
    }
    cfg["stages"] = {
        "sft": small_sft,
        "preferences": {"annotator": "longer", "n_instructions": 8, "max_new_tokens": 6, "batch_size": 4, "num_envs": 4},
        "reward_model": {"backbone": "sft", "n_eval": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 2,
                         "gradient_accumulation_steps": 1, "model_max_length": 96},
    }
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.slow
def test_all_methods_through_the_env_with_shared_cached_stages(tmp_path, capsys):
    # greedy evaluation decoding: a row then differs from sft's only where the method changed the policy (sampling
    # seeds differ per method, so sampled rows would differ anyway)
    preset = _preset(tmp_path, temperature=0.0)
    run_dir = tmp_path / "runs" / "r"
    rc = main(["benchmark", "--preset", str(preset), "--run-dir", str(run_dir), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    res = json.loads((run_dir / "results.json").read_text())
    assert [m["method"] for m in res["methods"]] == METHODS
    for m in res["methods"]:
        assert m["metrics"]["n_total"] == 4
    stages = sorted(p.name.split("-")[0] for p in (run_dir / "stages").iterdir())
    assert stages == ["preferences", "reward_model", "sft"]  # each built once, shared by the methods
    assert set(res["stage_seconds"]) == {"sft", "preferences", "reward_model"}
    prefs = [json.loads(line) for line in next((run_dir / "stages").glob("preferences-*/preferences.jsonl")).read_text().splitlines()]
    assert len(prefs) == 8 and {"instruction", "input", "output_1", "output_2", "preference"} <= set(prefs[0])
    by = {m["method"]: m for m in res["methods"]}
    outputs = {m: [r["output"] for r in json.loads(Path(by[m]["outputs_path"]).read_text())] for m in METHODS}
    assert outputs["sft"] != outputs["base"]  # the sft stage trained
    differ = {m: sum(a != b for a, b in zip(outputs[m], outputs["sft"])) for m in METHODS[2:]}
    assert all(differ.values()), f"methods answering exactly as sft: {differ}"
    assert by["dpo"]["settings"]["stages"]["preferences"] == by["binary_feedme"]["settings"]["stages"]["preferences"]
    assert "reward" in by["best_of_n"]["settings"]["stages"]
    for rl in ("ppo", "quark"):  # trained against the reward-model stage, a CSV row per step
        assert by[rl]["settings"]["stages"]["reward"] == by["best_of_n"]["settings"]["stages"]["reward"]
        (fit,) = (run_dir / rl).glob("fit-*")
        rows = (fit / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + 2 and rows[0].startswith("step,reward_mean")
        ck = by[rl]["checkpoint"]  # both kept steps judged on val; all tie at 0, the earliest is evaluated
        assert ck["selected_by"] == "val" and [p["win_rate"] for p in ck["curve"]] == [0.0, 0.0]
        assert ck["selected_step"] == 1
        assert sorted(p.name for p in (fit / "checkpoints").iterdir()) == ["step_1", "step_2"]
    for rl in ("grpo", "rloo", "online_dpo"):  # on TRL, against the same reward-model stage, a CSV row per step
        assert by[rl]["settings"]["stages"]["reward"] == by["best_of_n"]["settings"]["stages"]["reward"]
        (fit,) = (run_dir / rl).glob("fit-*")
        assert len((fit / "metrics.csv").read_text().splitlines()) == 1 + 2
        assert by[rl]["checkpoint"]["selected_by"] == "val" and by[rl]["checkpoint"]["selected_step"] == 1
        assert sorted(p.name for p in (fit / "checkpoints").iterdir()) == ["step_1", "step_2"]
    ppo_summary = json.loads(next((run_dir / "ppo").glob("fit-*/summary.json")).read_text())
    # every eval_steps: the evaluator's win-rate on a few eval instructions, logged beside the training metrics
    eval_rows = (next((run_dir / "ppo").glob("fit-*")) / "eval.csv").read_text().splitlines()
    assert "eval_win_rate" in eval_rows[0] and len(eval_rows) == 2 and eval_rows[1].startswith("2,")
    assert ppo_summary["value_init"].startswith("copy of the reward model trunk")  # RM on the SFT trunk: same vocab
    # a rerun builds nothing and generates nothing
    rc = main(["benchmark", "--preset", str(preset), "--run-dir", str(run_dir), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    again = json.loads((run_dir / "results.json").read_text())
    assert again["stage_seconds"] == res["stage_seconds"]  # each stage's build time, as recorded when built
    assert {**again, "created": None} == {**res, "created": None}  # labels, rewards and fit times read back
    counts = json.loads((run_dir / "last_run.json").read_text())
    assert all(c["n_generated"] == 0 and c["n_annotations_cached"] == 4 for c in counts.values())


@pytest.mark.slow
def test_overoptimization_experiment_writes_both_curves(tmp_path, capsys):
    """``alpaca-farm experiment overoptimization`` on the tiny pipeline: best-of-n over n and PPO over steps, each
    point a (proxy reward, win-rate) pair measured through eval-split envs; a rerun measures nothing again."""
    preset = _preset(tmp_path)
    run_dir = tmp_path / "runs" / "o"
    argv = ["experiment", "overoptimization", "--preset", str(preset), "--run-dir", str(run_dir), "--ns", "1,2,4",
            "--ppo-steps", "4", "--ppo", "learning_rate=2e-3", "--eval-every", "2", "--no-progress", "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    got = [(p["method"], p["x"]) for p in res["points"]]
    assert got == [("best_of_n", 1.0), ("best_of_n", 2.0), ("best_of_n", 4.0), ("ppo", 0.0), ("ppo", 2.0),
                   ("ppo", 4.0)]
    bon = [p for p in res["points"] if p["method"] == "best_of_n"]
    # best-of-n keeps the highest proxy reward of the first n samples: the mean can only rise with n
    assert bon[0]["proxy_reward"] <= bon[1]["proxy_reward"] <= bon[2]["proxy_reward"]
    for p in res["points"]:
        assert p["n"] == 4 and 0.0 <= p["win_rate"] <= 100.0
    assert Path(res["png"]).stat().st_size > 1000
    csv = Path(res["csv"]).read_text().splitlines()
    assert csv[0].startswith("method,x,proxy_reward,win_rate") and len(csv) == 1 + 6
    assert set(res["peaks"]) == {"best_of_n", "ppo"}
    stages = sorted(p.name.split("-")[0] for p in (run_dir / "stages").iterdir())
    assert stages == ["preferences", "reward_model", "sft"]
    # resumed: every point is read back, nothing is measured again (the points file does not grow)
    points_file = next((run_dir / "overoptimization").glob("points-*.jsonl"))
    n_lines = len(points_file.read_text().splitlines())
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["points"] == res["points"]
    assert len(points_file.read_text().splitlines()) == n_lines
    assert main(["experiment", "overoptimization", "--preset", str(preset), "--run-dir", str(run_dir),
                 "--ns", "0,2"]) == 2
    assert main(["experiment", "overoptimization", "--preset", str(preset), "--run-dir", str(run_dir),
                 "--ppo", "learning_rat=1e-4"]) == 2
    assert "unknown key 'ppo.learning_rat' (did you mean 'learning_rate'?)" in capsys.readouterr().err
