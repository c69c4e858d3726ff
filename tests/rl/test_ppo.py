"""PPO on a tiny Llama through the unlabeled AlpacaFarm-v0 env: the reward rises, a stopped run resumes exactly, the
value model comes from the reward model's trunk (lean mode: the same frozen trunk), the evaluator is refused."""
from __future__ import annotations

import csv

import gymnasium as gym
import pytest
import torch

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.agents import make_agent
from alpaca_farm_env.models import tiny_llama
from alpaca_farm_env.rewards import register_reward

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lowercase_count(prompts, responses, **row):
    """The synthetic reward: how many ASCII lower-case letters the response has (a random byte-level policy writes
    about 1 in 12 tokens)."""
    return [float(sum(c.isascii() and c.islower() for c in r)) for r in responses]


register_reward("test_rl_lowercase", lowercase_count, override=True)


def env(data_dir, n=120):
    return gym.make("AlpacaFarm-v0", split="unlabeled", reward="test_rl_lowercase", max_examples=n, data_dir=data_dir)


def config(**kw):
    base = dict(rollout_batch_size=32, step_batch_size=16, rollout_per_device_batch_size=32,
                step_per_device_batch_size=8, learning_rate=1e-2, warmup_steps=0, kl_coef=0.01, query_len=400,
                response_len=12, total_steps=15, save_steps=5, eval_steps=0, n_eval_prompts=4, seed=1)
    return {**base, **kw}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_ppo_raises_the_reward(data_dir, tmp_path):
    agent = make_agent("ppo", policy=tiny_llama(seed=0), config=config(eval_steps=15), max_new_tokens=12)
    agent.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path))
    log = rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in log] == list(range(1, 16))
    for col in ("reward_mean", "kl", "entropy", "clipfrac", "value_loss", "policy_loss", "response_length",
                "tokens_per_s", "lr", "kl_coef"):
        assert col in log[0]
    reward = [float(r["reward_mean"]) for r in log]
    first, last = sum(reward[:5]) / 5, sum(reward[-5:]) / 5
    assert last > first + 2.0, reward  # measured: ~1.5 -> ~8 of at most 12
    assert float(log[-1]["kl"]) > 0  # the policy moved away from the reference
    assert "policy trunk" in agent.value_init  # a synthetic reward has no trunk to share
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "summary.json").is_file()
    assert (tmp_path / "eval" / "step_15.md").is_file() and rows(tmp_path / "eval.csv")[0]["step"] == "15"
    out = agent.respond([{"instruction": "Say hi.", "input": "", "prompt": "### Response:"}])
    assert len(out) == 1 and isinstance(out[0], str)


@pytest.mark.slow
def test_ppo_resume_continues_the_step_counter_and_csv(data_dir, tmp_path):
    cfg = config(total_steps=5, save_steps=2, learning_rate=1e-3)
    stopped = make_agent("ppo", policy=tiny_llama(seed=0), config={**cfg, "stop_after": 3})
    stopped.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "run"))
    assert [r["step"] for r in rows(tmp_path / "run" / "metrics.csv")] == ["1", "2", "3"]  # step 3 not checkpointed
    assert not (tmp_path / "run" / "model").exists()
    resumed = make_agent("ppo", policy=tiny_llama(seed=0), config=cfg)
    resumed.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "run"))
    log = rows(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in log] == ["1", "2", "3", "4", "5"]  # step 3 redone once, no duplicate
    # the resumed run is the uninterrupted run: same prompts, same samples, same updates
    straight = make_agent("ppo", policy=tiny_llama(seed=0), config=cfg)
    straight.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "straight"))
    ref = rows(tmp_path / "straight" / "metrics.csv")
    for a, b in zip(log, ref):
        assert abs(float(a["reward_mean"]) - float(b["reward_mean"])) < 1e-6
        assert abs(float(a["kl"]) - float(b["kl"])) < 1e-3
    # a finished run is loaded, not trained again; one with another config is refused
    again = make_agent("ppo", policy=tiny_llama(seed=0), config=cfg)
    again.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "run"))
    assert again.fitted and len(rows(tmp_path / "run" / "metrics.csv")) == 5
    with pytest.raises(ValueError, match="fresh output_dir"):
        make_agent("ppo", policy=tiny_llama(seed=0), config={**cfg, "kl_coef": 0.5}).fit(
            {"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "run"))


@pytest.mark.slow
def test_value_model_from_the_reward_model_trunk_and_lean_sharing(data_dir, tmp_path):
    from alpaca_farm_env.envs.source import get_reward_backend
    from alpaca_farm_env.rewards.reward_model import reward_model_spec, tiny_reward_model

    rm_dir = tiny_reward_model(tmp_path / "rm", seed=5)  # byte tokenizer: the policy's vocabulary
    stage = reward_model_spec(rm_dir)
    rm = get_reward_backend(stage["reward"], stage["reward_kwargs"]).model
    rm_before = {k: v.clone() for k, v in rm.state_dict().items()}
    cfg = config(total_steps=2, rollout_batch_size=8, step_batch_size=8, rollout_per_device_batch_size=8)

    full = make_agent("ppo", policy=tiny_llama(seed=0), config=cfg)
    full.fit({"unlabeled": env(data_dir)}, reward=stage, output_dir=str(tmp_path / "full"))
    assert full.value_init.startswith("copy of the reward model trunk")
    assert full.reward_name.startswith("reward_model")

    lean = make_agent("ppo", policy=tiny_llama(seed=0), config={**cfg, "lean": True, "lora_r": 4})
    lean.fit({"unlabeled": env(data_dir)}, reward=stage, output_dir=str(tmp_path / "lean"))
    assert "shared" in lean.value_init
    assert lean.trained_module.value.trunk is rm.base_model  # one trunk, two heads
    assert float(lean.trained_module.value.head.weight.detach().abs().sum()) > 0  # the value head trained ...
    for k, v in rm.state_dict().items():  # ... and the shared trunk stayed frozen
        assert torch.equal(v, rm_before[k]), k
    trainable = [n for n, p in lean.trained_module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("value.head") for n in trainable)
    # the saved policy is a plain model again (adapter merged) that answers
    assert not any("lora" in k for k in lean.policy.model.state_dict())
    assert len(lean.respond([{"instruction": "Hi", "input": "", "prompt": "Hi"}])) == 1


def test_ppo_refuses_the_evaluator_as_reward(data_dir, tmp_path):
    agent = make_agent("ppo", policy=tiny_llama(seed=0), config=config(), evaluator="longer")
    with pytest.raises(ValueError, match="evaluator"):
        agent.fit({"unlabeled": env(data_dir)}, reward={"reward": "annotator", "reward_kwargs": {"annotator": "longer"}},
                  output_dir=str(tmp_path))


@pytest.mark.slow
def test_two_ppo_steps_give_the_numbers_of_the_code_before_the_rl_split(data_dir, tmp_path):
    """A guard on refactors of the RL code: two PPO steps on a seeded tiny Llama reproduce, to the CSV's 6 digits,
    the metrics the code had before ``rl/`` was split out of the agents (same seeds, same prompts, same samples)."""
    cfg = config(rollout_batch_size=8, step_batch_size=4, rollout_per_device_batch_size=4,
                 step_per_device_batch_size=2, warmup_steps=1, response_len=8, total_steps=2, save_steps=1,
                 n_eval_prompts=2)
    agent = make_agent("ppo", policy=tiny_llama(seed=0), config=cfg, max_new_tokens=8)
    agent.fit({"unlabeled": env(data_dir, n=60)}, output_dir=str(tmp_path))
    log = rows(tmp_path / "metrics.csv")
    before = [  # metrics.csv of the same run before the split (the code of agents/rl_core.py)
        {"reward_mean": 0.875, "reward_std": 0.780625, "kl": 0.0, "entropy": 5.55018, "clipfrac": 0.0,
         "approxkl": 0.0, "policy_loss": 0.0, "value_loss": 3.02656, "value_clipfrac": 0.0, "lr": 0.0},
        {"reward_mean": 1.0, "reward_std": 1.32288, "kl": 0.0, "entropy": 5.5502, "clipfrac": 0.242188,
         "approxkl": 0.0201776, "policy_loss": -0.064836, "value_loss": 3.44729, "value_clipfrac": 0.101562,
         "lr": 0.01},
    ]
    for got, want in zip(log, before, strict=True):
        for k, v in want.items():
            assert abs(float(got[k]) - v) <= 1e-5 + 1e-5 * abs(v), (got["step"], k, got[k], v)


def test_ppo_refuses_an_env_that_is_not_alpaca_farm(tmp_path):
    agent = make_agent("ppo", policy=tiny_llama(seed=0), config=config())
    with pytest.raises(TypeError, match="not an AlpacaFarm-v0 env"):
        agent.fit({"unlabeled": gym.make("CartPole-v1")}, output_dir=str(tmp_path))
