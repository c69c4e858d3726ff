"""Gymnasium's own vector modes on the one-step envs: ``sync`` and ``async`` run with same-step autoreset (every step
scores its responses) and refuse, before loading anything, the default next-step autoreset (every second step a
reset that drops its actions) and async shared memory, naming the fix and the native batched env."""
from __future__ import annotations

import gymnasium as gym
import pytest
from gymnasium.vector import AutoresetMode

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.errors import ConfigError

SAME_STEP = {"autoreset_mode": AutoresetMode.SAME_STEP}
KW = {"reward": "length", "split": "unlabeled", "max_examples": 8}


@pytest.mark.parametrize("env_id, mode, vector_kwargs, words", [
    ("AlpacaFarm-v0", "sync", {}, "needs vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP}"),
    ("AlpacaFarm-v0", "async", SAME_STEP, "needs vector_kwargs['shared_memory'] = False"),
    ("AlpacaFarm-v0", "sync", {"autoreset_mode": AutoresetMode.NEXT_STEP}, "every second step a reset"),
    ("AlpacaFarmPairwise-v0", "sync", {}, "AlpacaFarmPairwiseEnv under vectorization_mode='sync'"),
])
def test_next_step_autoreset_and_async_shared_memory_are_refused(env_id, mode, vector_kwargs, words):
    kw = {"max_examples": 8} if "Pairwise" in env_id else KW
    with pytest.raises(ConfigError) as err:
        gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, vector_kwargs=vector_kwargs, **kw)
    assert words in str(err.value) and "native batched env" in str(err.value) and "\n" not in str(err.value)


def test_sync_with_same_step_autoreset_scores_every_step_like_the_native_env():
    sync = gym.make_vec("AlpacaFarm-v0", num_envs=2, vectorization_mode="sync", vector_kwargs=SAME_STEP, **KW)
    native = gym.make_vec("AlpacaFarm-v0", num_envs=2, **KW)
    sync.reset(seed=0)
    native.reset(seed=0)
    for _ in range(3):  # with next-step autoreset the second step would return [0, 0]
        _, r_sync, term, _, info = sync.step(("ab", "abcd"))
        _, r_native, *_ = native.step(("ab", "abcd"))
        assert list(r_sync) == list(r_native) == [2.0, 4.0] and all(term)
        assert all(info["_final_obs"])  # the episode's observation, the next one already in place
    sync.close()
    native.close()


def test_the_token_env_keeps_gymnasiums_default_autoreset():
    # a many-step episode loses one step in many to the reset: not refused
    env = gym.make_vec("AlpacaFarmToken-v0", num_envs=2, vectorization_mode="sync", tokenizer="byte", **KW)
    env.reset(seed=0)
    env.close()


@pytest.mark.slow
def test_async_with_same_step_autoreset_and_no_shared_memory_scores_every_step():
    env = gym.make_vec("AlpacaFarm-v0", num_envs=2, vectorization_mode="async",
                       vector_kwargs={**SAME_STEP, "shared_memory": False}, **KW)
    env.reset(seed=0)
    for _ in range(3):
        _, rewards, *_ = env.step(("ab", "abcd"))
        assert list(rewards) == [2.0, 4.0]
    env.close()
