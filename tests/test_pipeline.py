"""The whole AlpacaFarm pipeline as one command on a tiny random model and a cheap local annotator: each shared stage
(SFT, preference collection through AlpacaFarmPairwise-v0, reward model) is built once, reused across methods and
reruns, and every method of issue 10 runs through the env."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alpaca_farm_env.benchmark.config import load_preset
from alpaca_farm_env.cli import main

METHODS = ["base", "sft", "best_of_n", "expert_iteration", "binary_feedme", "binary_reward_conditioning", "dpo"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _preset(tmp_path: Path) -> Path:
    cfg = load_preset("paper").to_dict()  # the paper preset's code path, with a tiny model and a local annotator
    cfg.update(name="pipe", policy="tiny-llama", annotator="longer", n_eval=4, compare_to=None)
    cfg["generation"].update(max_new_tokens=6, batch_size=4)
    small_sft = {"max_steps": 2, "max_length": 96, "per_device_batch_size": 4, "gradient_accumulation_steps": 1,
                 "learning_rate": 1e-3}
    cfg["methods"] = {
        "base": {}, "sft": {},
        "best_of_n": {"n": 2},  # reranks with the reward-model stage
        "expert_iteration": {"config": {"best_of_n": {"n": 2, "max_new_tokens": 6}, "sft": small_sft, "n_prompts": 4}},
        "binary_feedme": {"config": small_sft},
        "binary_reward_conditioning": {"config": small_sft},
        "dpo": {"config": {"max_steps": 2, "max_length": 512, "per_device_batch_size": 2,
                           "gradient_accumulation_steps": 1, "learning_rate": 1e-3}},
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


def test_all_methods_through_the_env_with_shared_cached_stages(tmp_path, capsys):
    preset = _preset(tmp_path)
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
    assert by["dpo"]["settings"]["stages"]["preferences"] == by["binary_feedme"]["settings"]["stages"]["preferences"]
    assert "reward" in by["best_of_n"]["settings"]["stages"]
    # a rerun builds nothing and generates nothing
    rc = main(["benchmark", "--preset", str(preset), "--run-dir", str(run_dir), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    again = json.loads((run_dir / "results.json").read_text())
    assert all(v == 0.0 for v in again["stage_seconds"].values())
    assert all(m["n_generated"] == 0 and m["n_annotations_cached"] == 4 for m in again["methods"])
