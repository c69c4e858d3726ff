"""``AlpacaFarmPairwise-v0``: the dueling-bandit env. Spaces and check_env, the reward/preference encoding, one
annotation call per vector step, per-episode versus instruction-keyed noise."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import alpaca_farm_env  # noqa: F401
from alpaca_farm_env.annotators import Annotation, register_annotator
from alpaca_farm_env.envs import clear_reward_cache


class CountingLonger:
    """A real annotator (the "longer wins" rule) that counts its compare calls."""

    name = "counting_longer"
    calls: list[int] = []

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed=0):
        CountingLonger.calls.append(len(outputs_1))
        return [Annotation(preference=1.5 if len(a) == len(b) else (2.0 if len(b) > len(a) else 1.0),
                           probability=None, annotator=self.name) for a, b in zip(outputs_1, outputs_2)]


register_annotator("counting_longer", CountingLonger, override=True)


@pytest.fixture(autouse=True)
def _fresh():
    clear_reward_cache()
    CountingLonger.calls.clear()
    yield
    clear_reward_cache()


def test_check_env_and_spaces():
    env = gym.make("AlpacaFarmPairwise-v0", split="preference", annotator="longer", max_examples=8)
    check_env(env.unwrapped, skip_render_check=True)
    assert isinstance(env.action_space, gym.spaces.Tuple) and len(env.action_space) == 2


def test_reward_and_preference_encoding():
    """One sign convention: the reward is P(the SECOND response preferred), as the annotator reward's (whose second
    output is the policy's response)."""
    env = gym.make("AlpacaFarmPairwise-v0", split="preference", annotator="longer", max_examples=4)
    env.reset(seed=0)
    _, r, term, trunc, info = env.step(("a much longer first answer", "short"))
    assert (r, info["preference"], term, trunc) == (0.0, 1.0, True, False)
    env.reset()
    _, r, *_, info = env.step(("short", "a much longer second answer"))
    assert (r, info["preference"]) == (1.0, 2.0)
    env.reset()
    _, r, *_, info = env.step(("same", "same"))
    assert (r, info["preference"]) == (0.5, 1.5)
    assert info["annotator"] == "longer" and "example_index" in info
    with pytest.raises(TypeError, match="pair"):
        env.reset()
        env.step("one string")


def test_vector_env_makes_one_annotation_call_per_step():
    envs = gym.make_vec("AlpacaFarmPairwise-v0", num_envs=4, split="preference", annotator="counting_longer")
    obs, _ = envs.reset(seed=0)
    assert len(obs["prompt"]) == 4
    for step in range(3):
        obs, rewards, term, trunc, infos = envs.step([("xx" * (i + step), "x") for i in range(4)])
        assert term.all() and not trunc.any()
    assert CountingLonger.calls == [4, 4, 4]
    assert rewards.tolist() == [0.0, 0.0, 0.0, 0.0]  # step 2: the first, "xx"*(i+2), is longer than "x" for every i
    assert infos["final_info"]["preference"].tolist() == [1.0] * 4
    # Gymnasium's batched Tuple layout (firsts, seconds) is accepted too
    envs.step((["a"] * 4, ["bb"] * 4))
    assert CountingLonger.calls[-1] == 4


def test_noisy_pool_default_per_episode_and_instruction_keyed_modes():
    """The default annotator is the noisy pool; with seed_mode="episode" one pair visited 200 times gets both labels,
    with seed_mode="instruction" (a dataset annotated once) every visit gets the same label."""
    kw = dict(split="preference", indices=[5])
    pair = ("", "A complete and helpful answer to the instruction, with details.")
    labels = {}
    for mode in ("episode", "instruction"):
        env = gym.make("AlpacaFarmPairwise-v0", seed_mode=mode, **kw)
        env.reset(seed=0)
        out = []
        for _ in range(200):
            out.append(env.step(pair)[1])
            env.reset()
        labels[mode] = np.asarray(out)
        assert env.unwrapped.annotator.name == "noisy_pooled"
    assert set(np.unique(labels["episode"])) == {0.0, 1.0}
    assert 0.1 < np.mean(labels["episode"] == 0.0) < 0.4  # the noise-free reward is 1 (the empty first answer loses)
    assert len(np.unique(labels["instruction"])) == 1
