"""Kept policy checkpoints (``keep_checkpoints``): one per save in ``output_dir/checkpoints/step_<k>``, apart from the
resume state and kept after training (full weights; the LoRA adapter only in lean mode), reused by a rerun of the
same run, loadable as a policy the agent answers with; the run key of a config without them is unchanged."""
from __future__ import annotations

import shutil

import gymnasium as gym
import pytest
import torch

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.agents import make_agent
from alpaca_farm_env.agents.ppo import PPOAgent, PPOConfig
from alpaca_farm_env.agents.quark import QuarkAgent
from alpaca_farm_env.models import tiny_llama
from alpaca_farm_env.rewards import register_reward
from alpaca_farm_env.rl import run_key, saved_steps

pytestmark = pytest.mark.usefixtures("one_torch_thread")

register_reward("test_kept_lowercase", lambda prompts, responses, **row: [
    float(sum(c.isascii() and c.islower() for c in r)) for r in responses], override=True)


def env(data_dir):
    return gym.make("AlpacaFarm-v0", split="unlabeled", reward="test_kept_lowercase", max_examples=40,
                    data_dir=data_dir)


def config(**kw):
    base = dict(rollout_batch_size=8, step_batch_size=8, rollout_per_device_batch_size=8,
                step_per_device_batch_size=4, learning_rate=1e-2, warmup_steps=0, query_len=400, response_len=6,
                total_steps=3, save_steps=1, eval_steps=0, n_eval_prompts=0, seed=1, keep_checkpoints=True)
    return {**base, **kw}


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_schedule_is_every_save_steps_and_the_last_step():
    assert saved_steps(PPOConfig(total_steps=4, save_steps=1)) == [1, 2, 3, 4]
    assert saved_steps(PPOConfig(total_steps=10, save_steps=4)) == [4, 8, 10]
    assert PPOAgent.checkpoint_schedule({"total_steps": 390}) == list(range(20, 381, 20)) + [390]
    assert QuarkAgent.checkpoint_schedule(None) == saved_steps(QuarkAgent.CONFIG_CLASS())


def test_the_run_key_changes_only_when_checkpoints_are_kept():
    reward = ("reward_model", {"model_dir": "runs/rm"})
    old = "dcb4d96f20d2fb66"  # PPOConfig()'s key before the field existed (tests/rl/test_rl_core.py)
    assert run_key("ppo", PPOConfig(keep_checkpoints=False), *reward, "tiny-llama", 100, 2) == old
    assert run_key("ppo", PPOConfig(keep_checkpoints=True), *reward, "tiny-llama", 100, 2) != old


@pytest.mark.slow
def test_ppo_keeps_each_saved_policy_after_training_and_a_rerun_reuses_them(data_dir, tmp_path):
    out = tmp_path / "run"
    agent = make_agent("ppo", policy=tiny_llama(seed=0), config=config(), max_new_tokens=6)
    agent.fit({"unlabeled": env(data_dir)}, output_dir=str(out))
    assert agent.checkpoint_steps() == [1, 2, 3]
    assert not (out / "checkpoint").exists()  # the resume state is gone, the kept policies stay
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1", "step_2", "step_3"]
    assert (out / "checkpoints" / "step_2" / "config.json").is_file()  # full weights
    final = weights(agent.policy.model)
    last, first = agent.checkpoint_policy(3), agent.checkpoint_policy(1)
    assert same(weights(last.model), final)  # the last kept policy is the trained one
    assert not same(weights(first.model), final)  # an earlier one is not
    # the agent answers with a kept policy once it is assigned
    obs = [{"instruction": "Hi", "input": "", "prompt": "### Response:"}] * 4
    agent.policy = first
    answers = agent.respond(obs)
    twin = make_agent("ppo", policy=agent.checkpoint_policy(1), config=config(), max_new_tokens=6)
    twin.fitted = True
    assert twin.respond(obs) == answers
    with pytest.raises(ValueError, match=r"kept no policy at step 7 .*kept steps: \[1, 2, 3\]"):
        agent.checkpoint_policy(7)
    # a rerun of the same run loads it and reuses the kept policies (nothing rewritten)
    stamps = {p.name: (p / "meta.json").stat().st_mtime_ns for p in (out / "checkpoints").iterdir()}
    again = make_agent("ppo", policy=tiny_llama(seed=0), config=config(), max_new_tokens=6)
    again.fit({"unlabeled": env(data_dir)}, output_dir=str(out))
    assert again.checkpoint_steps() == [1, 2, 3] and again.history == []  # loaded, not trained
    assert {p.name: (p / "meta.json").stat().st_mtime_ns for p in (out / "checkpoints").iterdir()} == stamps
    assert same(weights(again.checkpoint_policy(1).model), weights(first.model))


@pytest.mark.slow
def test_a_stopped_run_resumes_and_keeps_every_step(data_dir, tmp_path):
    out = tmp_path / "run"
    stopped = make_agent("ppo", policy=tiny_llama(seed=0), config=config(stop_after=2))
    stopped.fit({"unlabeled": env(data_dir)}, output_dir=str(out))
    assert stopped.checkpoint_steps() == [1, 2] and not stopped.fitted
    resumed = make_agent("ppo", policy=tiny_llama(seed=0), config=config())
    resumed.fit({"unlabeled": env(data_dir)}, output_dir=str(out))
    assert resumed.checkpoint_steps() == [1, 2, 3]
    assert same(weights(resumed.checkpoint_policy(3).model), weights(resumed.policy.model))
    # another run's kept checkpoints are refused, not mixed in
    shutil.copytree(out / "checkpoints", tmp_path / "other" / "checkpoints")
    other = make_agent("ppo", policy=tiny_llama(seed=0), config=config(learning_rate=5e-3))
    with pytest.raises(ValueError, match="step_1 belongs to another run"):
        other.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "other"))


@pytest.mark.slow
def test_lean_mode_keeps_the_adapter_only(data_dir, tmp_path):
    out = tmp_path / "lean"
    agent = make_agent("quark", policy=tiny_llama(seed=0), config=config(total_steps=2, lean=True, lora_r=4))
    agent.fit({"unlabeled": env(data_dir)}, output_dir=str(out))
    files = {p.name for p in (out / "checkpoints" / "step_2").iterdir()}
    assert "adapter_config.json" in files and "config.json" not in files and "model.safetensors" not in files
    loaded = agent.checkpoint_policy(2)  # the start policy with the step's adapter merged in
    assert not any("lora" in k for k in loaded.model.state_dict())
    got, want = weights(loaded.model), weights(agent.policy.model)
    assert got.keys() == want.keys() and all(torch.allclose(got[k], want[k], atol=1e-6) for k in got)
    assert not same(weights(agent.checkpoint_policy(1).model), want)


def test_quark_reward_tokens_are_kept_with_the_policy(data_dir, tmp_path):
    start = tiny_llama(seed=0)
    agent = make_agent("quark", policy=start, config=config(total_steps=1, train_on_best_quantile=False))
    agent.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path))
    kept = agent.checkpoint_policy(1)
    assert len(kept.tokenizer) == len(agent.policy.tokenizer) == len(start.tokenizer) + 4
    assert kept.tokenizer.convert_tokens_to_ids("<reward_0>") == agent.policy.tokenizer.convert_tokens_to_ids(
        "<reward_0>")
