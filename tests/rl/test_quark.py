"""Quark on a tiny Llama through the unlabeled AlpacaFarm-v0 env: the reward rises with the top-quantile variant, and
the all-quantile variant trains behind reward tokens without touching the stage's tokenizer."""
from __future__ import annotations

import csv

import gymnasium as gym
import pytest

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.agents import make_agent
from alpaca_farm_env.agents.quark import QuarkConfig
from alpaca_farm_env.models import tiny_llama
from alpaca_farm_env.rewards import register_reward

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lowercase_count(prompts, responses, **row):
    """The synthetic reward: the number of ASCII lower-case letters in the response."""
    return [float(sum(c.isascii() and c.islower() for c in r)) for r in responses]


register_reward("test_quark_lowercase", lowercase_count, override=True)


def env(data_dir):
    return gym.make("AlpacaFarm-v0", split="unlabeled", reward="test_quark_lowercase", max_examples=120,
                    data_dir=data_dir)


def config(**kw):
    base = dict(rollout_batch_size=32, step_batch_size=16, rollout_per_device_batch_size=32,
                step_per_device_batch_size=8, learning_rate=1e-2, warmup_steps=0, query_len=400, response_len=12,
                total_steps=20, save_steps=10, eval_steps=0, n_eval_prompts=4, seed=1)
    return {**base, **kw}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_quark_defaults_are_the_reference_script():
    c = QuarkConfig()
    assert (c.learning_rate, c.kl_coef, c.entropy_coef, c.num_reward_tokens, c.train_on_best_quantile) == (
        3e-6, 0.05, 0.0, 4, True)
    assert (c.rollout_batch_size, c.step_batch_size, c.warmup_steps, c.adam_epsilon) == (512, 256, 5, 1e-5)
    assert (c.temperature, c.query_len, c.response_len) == (1.0, 192, 300)


@pytest.mark.slow
def test_quark_raises_the_reward(data_dir, tmp_path):
    agent = make_agent("quark", policy=tiny_llama(seed=0), config=config(), max_new_tokens=12)
    agent.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path))
    log = rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in log] == list(range(1, 21))
    reward = [float(r["reward_mean"]) for r in log]
    first, last = sum(reward[:5]) / 5, sum(reward[-5:]) / 5
    assert last > first + 1.0, reward  # measured: ~1.4 -> ~3.5
    # the kept quarter is the best of each pool: its mean is above the pool's
    assert all(float(r["reward_kept_mean"]) >= float(r["reward_mean"]) for r in log)
    assert float(log[-1]["kl"]) > 0
    assert agent.fitted and (tmp_path / "model" / "config.json").is_file()


def test_quark_all_quantiles_with_reward_tokens(data_dir, tmp_path):
    start = tiny_llama(seed=0)
    n_tok = len(start.tokenizer)
    agent = make_agent("quark", policy=start, config=config(total_steps=2, train_on_best_quantile=False),
                       max_new_tokens=8)
    agent.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path))
    tok = agent.policy.tokenizer
    assert len(tok) == n_tok + 4 and len(start.tokenizer) == n_tok  # the stage's tokenizer is untouched
    ids = tok("<reward_0>### Response:").input_ids
    assert tok.convert_tokens_to_ids("<reward_0>") in ids and len(ids) == 1 + 1 + len("### Response:")
    assert agent.policy.model.get_input_embeddings().weight.shape[0] == n_tok + 4
    assert len(agent.respond([{"instruction": "Hi", "input": "", "prompt": "Hi"}])) == 1
