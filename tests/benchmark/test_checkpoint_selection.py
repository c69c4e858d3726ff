"""Checkpoint selection without the test set, on the tiny pipeline: PPO keeps a policy at each step, each kept policy
is judged on the val split by the noise-free evaluator, the best one is the one the benchmark evaluates, and the eval
split takes no part in the choice (the evaluator records every instruction it judges)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alpaca_farm_env.annotators import register_annotator
from alpaca_farm_env.annotators.base import Annotation
from alpaca_farm_env.benchmark.config import BenchmarkConfig, load_preset
from alpaca_farm_env.benchmark.selection import noise_free, parse_select, val_rows
from alpaca_farm_env.cli import main
from alpaca_farm_env.errors import ConfigError
from alpaca_farm_env.rewards import register_reward
from alpaca_farm_env.utils import stable_hash

pytestmark = pytest.mark.usefixtures("one_torch_thread")

JUDGED: list[list[str]] = []  # the instructions of every call of the evaluator, in order


@register_annotator("test_selection_recorder", override=True)
class RecordingJudge:
    """The evaluator of these tests: records the instructions of each call; the response wins or loses by a hash of
    its text (so that checkpoints that answer differently get different win-rates)."""

    name = "test_selection_recorder"

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed=0):
        JUDGED.append(list(instructions))
        return [Annotation(preference=2.0 if stable_hash("judge", o) % 3 else 1.0, annotator=self.name)
                for o in outputs_2]


register_reward("test_selection_lowercase", lambda prompts, responses, **row: [
    float(sum(c.isascii() and c.islower() for c in r)) for r in responses], override=True)

N_EVAL, N_SELECT, STEPS = 4, 6, 4
PPO = {"rollout_batch_size": 4, "step_batch_size": 4, "rollout_per_device_batch_size": 4,
       "step_per_device_batch_size": 2, "query_len": 512, "response_len": 6, "total_steps": STEPS, "save_steps": 1,
       "eval_steps": 0, "n_eval_prompts": 0, "learning_rate": 1e-2, "warmup_steps": 0, "noptepochs": 1}


def _config(select: str | None = None) -> dict:
    cfg = load_preset("paper").to_dict()  # stages.sft: null: the tiny policy is the SFT model, only PPO trains
    cfg.update(name="sel", policy="tiny-llama", annotator="test_selection_recorder", n_eval=N_EVAL, n_select=N_SELECT,
               compare_to=None)
    cfg["generation"].update(max_new_tokens=6, batch_size=4)
    ppo = {"reward": "test_selection_lowercase", "config": dict(PPO)}
    if select is not None:
        ppo["select"] = select
    cfg["methods"] = {"ppo": ppo}
    return cfg


def _write(tmp_path: Path, cfg: dict, name: str = "sel.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _bench(capsys, preset: Path, run_dir: Path, *extra: str) -> dict:
    rc = main(["benchmark", "--preset", str(preset), "--run-dir", str(run_dir), "--no-progress", *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads((run_dir / "results.json").read_text())


def _kept_policy(fit_dir: Path, step: int):
    """The policy kept at ``step``, loaded by hand: the saved weights with the start policy's tokenizer."""
    from transformers import AutoModelForCausalLM

    from alpaca_farm_env.models import Policy, tiny_llama

    model = AutoModelForCausalLM.from_pretrained(str(fit_dir / "checkpoints" / f"step_{step}"))
    return Policy(model, tiny_llama(seed=0).tokenizer, name=f"step {step}")


def _answers(policy, rows) -> list[str]:
    """What the benchmark's ppo agent answers with ``policy``: the same agent settings, the eval rows in batches of
    the generation batch size."""
    from alpaca_farm_env.agents import make_agent

    agent = make_agent("ppo", policy=policy, config=PPO, max_new_tokens=6, temperature=0.7, top_p=1.0, batch_size=4,
                       seed=0)
    agent.fitted = True  # answer with the given policy, as after a fit
    obs = [{"instruction": r["instruction"], "input": r["input"], "prompt": r["prompt"]} for r in rows]
    return [t for i in range(0, len(obs), 4) for t in agent.respond(obs[i: i + 4])]


@pytest.mark.slow
def test_ppo_is_evaluated_at_its_best_val_checkpoint_and_the_eval_split_takes_no_part(tmp_path, capsys, data_dir):
    from alpaca_farm_env.benchmark.runner import eval_instructions

    run_dir = tmp_path / "runs" / "r"
    preset = _write(tmp_path, _config())
    JUDGED.clear()
    res = _bench(capsys, preset, run_dir)
    (ppo,) = res["methods"]
    ck = ppo["checkpoint"]
    # a curve of 4 points, one per kept step, and its argmax (ties: the earliest step) selected on val
    assert ck["selected_by"] == "val" and [p["step"] for p in ck["curve"]] == [1, 2, 3, 4]
    assert ck["n_select"] == N_SELECT and ck["evaluator"] == "test_selection_recorder"
    best = max(ck["curve"], key=lambda p: (p["win_rate"], -p["step"]))
    assert ck["selected_step"] == best["step"]
    assert all(0.0 <= p["win_rate"] <= 100.0 and p["standard_error"] >= 0 for p in ck["curve"])
    # the evaluator judged the val instructions of the selection first, one call per kept step, then the eval rows:
    # no eval instruction was judged during the selection, no val instruction afterwards
    cfg = BenchmarkConfig.from_dict(_config())
    val = [r["instruction"] for r in val_rows(cfg, data_dir)]
    evals = eval_instructions(cfg, data_dir)
    eval_set = {r["instruction"] for r in evals}
    assert len(val) == N_SELECT and not set(val) & eval_set
    assert JUDGED[:STEPS] == [val] * STEPS
    assert JUDGED[STEPS:] and all(set(call) <= eval_set for call in JUDGED[STEPS:])
    # the benchmark evaluated the selected checkpoint: its outputs are what that kept policy answers
    (fit_dir,) = (run_dir / "ppo").glob("fit-*")
    assert sorted(p.name for p in (fit_dir / "checkpoints").iterdir()) == [f"step_{k}" for k in range(1, 5)]
    outputs = [r["output"] for r in json.loads(Path(ppo["outputs_path"]).read_text())]
    assert outputs == _answers(_kept_policy(fit_dir, ck["selected_step"]), evals)
    assert ck["selected_step"] != STEPS  # for this seed, so the check above tells the selected step from the last
    assert outputs != _answers(_kept_policy(fit_dir, STEPS), evals)
    # results.md shows the selected step; the curve is plotted beside the results
    md = (run_dir / "results.md").read_text()
    assert f"ppo: step {ck['selected_step']} of [1, 2, 3, 4] by val win-rate" in md
    assert (run_dir / "ppo" / "selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a rerun reports exactly the same without generating or judging anything ...
    n_calls = len(JUDGED)
    again = _bench(capsys, preset, run_dir)
    assert {**again, "created": None} == {**res, "created": None} and len(JUDGED) == n_calls
    # ... and so does one that must fit again (its eval answers lost): the training and the val points are read back
    (run_dir / "ppo" / "generations.jsonl").unlink()
    third = _bench(capsys, preset, run_dir)
    assert third["methods"][0]["checkpoint"] == ck and third["methods"][0]["metrics"] == ppo["metrics"]
    assert all(not set(call) & set(val) for call in JUDGED[n_calls:])  # no val instruction judged again

    # select: step:2 on the same training (--force replaces the run's settings): the fit dir is reused
    stamp = (fit_dir / "metrics.csv").stat().st_mtime_ns
    step2 = _bench(capsys, _write(tmp_path, _config("step:2"), "step2.yaml"), run_dir, "--force")
    assert step2["methods"][0]["checkpoint"] == {"selected_step": 2, "selected_by": "step", "curve": []}
    assert [p.name for p in (run_dir / "ppo").glob("fit-*")] == [fit_dir.name]
    assert (fit_dir / "metrics.csv").stat().st_mtime_ns == stamp  # not trained again
    outputs2 = [r["output"] for r in json.loads(Path(step2["methods"][0]["outputs_path"]).read_text())]
    assert outputs2 == _answers(_kept_policy(fit_dir, 2), evals)
    assert "ppo: step 2 (select: step:2)" in (run_dir / "results.md").read_text()


@pytest.mark.slow
def test_select_last_evaluates_the_final_policy_and_keeps_no_checkpoints(tmp_path, capsys, data_dir):
    from alpaca_farm_env.benchmark.runner import eval_instructions
    from alpaca_farm_env.models import from_pretrained

    run_dir = tmp_path / "runs" / "last"
    cfg = _config("last")
    JUDGED.clear()
    res = _bench(capsys, _write(tmp_path, cfg), run_dir)
    assert res["methods"][0]["checkpoint"] == {"selected_step": STEPS, "selected_by": "last", "curve": []}
    (fit_dir,) = (run_dir / "ppo").glob("fit-*")
    assert not (fit_dir / "checkpoints").exists() and not (run_dir / "ppo" / "selection.png").exists()
    evals = eval_instructions(BenchmarkConfig.from_dict(cfg), data_dir)
    assert all(set(call) <= {r["instruction"] for r in evals} for call in JUDGED)  # nothing judged on val
    final = from_pretrained(fit_dir / "model")  # the trained policy, as saved at the end
    outputs = [r["output"] for r in json.loads(Path(res["methods"][0]["outputs_path"]).read_text())]
    assert outputs == _answers(final, evals)
    assert "ppo: step 4 (select: last)" in (run_dir / "results.md").read_text()


@pytest.mark.parametrize("select, message", [
    ("step:7", "sel.yaml: methods.ppo.select: step:7: ppo keeps checkpoints at steps [1, 2, 3, 4] (save_steps 1, "
               "total_steps 4); choose one of them"),
    ("best", "sel.yaml: methods.ppo.select: unknown value 'best'; choose val, last or step:<k>"),
])
def test_a_bad_select_is_one_line_refused_before_any_compute(tmp_path, capsys, select, message):
    run_dir = tmp_path / "runs" / "bad"
    rc = main(["benchmark", "--preset", str(_write(tmp_path, _config(select))), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len([line for line in err.splitlines() if "select" in line]) == 1
    assert not run_dir.exists()  # refused before any compute


def test_select_values_and_defaults():
    from alpaca_farm_env.agents import AGENTS
    from alpaca_farm_env.benchmark.selection import select_of

    assert str(parse_select("val")) == "val" and parse_select(" step:20 ").step == 20
    for bad in ("step:0", "step:x", "Val", 3, None):
        with pytest.raises(ConfigError, match="choose val, last or step:<k>"):
            parse_select(bad)
    assert str(select_of({}, AGENTS.resolve("ppo"))) == "val" and str(select_of({}, AGENTS.resolve("quark"))) == "val"
    assert str(select_of({}, AGENTS.resolve("dpo"))) == "last" and str(select_of({}, AGENTS.resolve("sft"))) == "last"
    with pytest.raises(ConfigError, match="methods.dpo.select: val: method 'dpo' keeps no checkpoints"):
        BenchmarkConfig.from_dict({**_config(), "methods": {"dpo": {"select": "val"}}}, "p.yaml")
    with pytest.raises(ConfigError, match="n_select: must be >= 1"):
        BenchmarkConfig.from_dict({**_config(), "n_select": 0}, "p.yaml")


def test_the_selection_judge_is_the_evaluator_without_label_noise():
    assert noise_free("noisy_pooled", {}) == ("pooled", {})
    assert noise_free("alpaca_farm_pool_noisy", {"max_instances": 5}) == ("alpaca_farm_pool", {"max_instances": 5})
    assert noise_free("pooled", {"p_label_flip": 0.25}) == ("pooled", {"p_label_flip": None})
    assert noise_free("longer", {}) == ("longer", {})


def test_n_select_beyond_the_val_split_is_refused(data_dir):
    cfg = BenchmarkConfig.from_dict({**_config(), "n_select": 10**6})
    with pytest.raises(ConfigError, match=r"n_select: 1000000 is more than the \d+ val instructions"):
        val_rows(cfg, data_dir)
