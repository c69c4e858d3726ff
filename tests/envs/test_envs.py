"""AlpacaFarm-v0 (text env), its UnicodeText space and the batched vector env."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.data import format_prompt, load_eval_set, load_split
from alpaca_farm_env.envs.source import cached_backend_count, clear_reward_cache
from alpaca_farm_env.envs.spaces import UnicodeText
from alpaca_farm_env.envs.text_env import AlpacaFarmEnv
from alpaca_farm_env.envs.vector_env import AlpacaFarmVectorEnv
from alpaca_farm_env.rewards import BaseReward
from alpaca_farm_env.rewards.length import LengthReward

EVAL_IDX = [0, 3, 17, 42, 101, 250, 400, 804]


class CountingReward(BaseReward):
    """The real length reward, recording the batch size of every call."""

    name = "counting_length"

    def __init__(self):
        self.inner = LengthReward()
        self.calls: list[int] = []

    def score(self, prompts, responses, **row):
        assert len(prompts) == len(responses) == len(row["reference_output"]) == len(row["instruction"])
        self.calls.append(len(responses))
        return self.inner.score(prompts, responses, **row)


def make_env(**kw) -> gym.Env:
    kw = {"split": "eval", "indices": EVAL_IDX, "reward": "length", **kw}
    return gym.make("AlpacaFarm-v0", **kw)


# ------------------------------------------------------------------------------------------------ space
def test_unicode_text_space_accepts_any_string_within_length():
    space = UnicodeText(10, min_length=0, seed=3)
    for s in ["", "héllo\n", "中文字 ok", "😀" * 10, "\t\x00"]:
        assert s in space
    assert "x" * 11 not in space
    assert b"bytes" not in space and 5 not in space
    assert "" not in UnicodeText(10, min_length=1)
    samples = [space.sample() for _ in range(50)]
    assert all(s in space for s in samples)
    assert any(not s.isascii() for s in samples) and len(set(samples)) > 40
    space.seed(11)
    a = [space.sample() for _ in range(5)]
    space.seed(11)
    assert a == [space.sample() for _ in range(5)]
    assert len(space.sample(mask=7)) == 7
    with pytest.raises(ValueError):
        UnicodeText(3, min_length=4)


# ------------------------------------------------------------------------------------------------ text env
def test_text_env_passes_gymnasium_check_env():
    env = make_env()
    check_env(env.unwrapped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # check_env warns that it was given a wrapped env
        check_env(env)
    env.close()


def test_step_gives_backend_reward_and_reference_info():
    env = make_env(shuffle=False)
    rows = load_eval_set("alpacafarm")
    obs, info = env.reset(seed=0)
    first = rows[EVAL_IDX[0]]
    assert obs == {"instruction": first["instruction"], "input": first["input"],
                   "prompt": format_prompt(first["instruction"], first["input"])}
    assert info["example_index"] == EVAL_IDX[0]
    response = "Broadway: Nathan Lane, Audra McDonald. 中文"
    obs2, reward, terminated, truncated, info = env.step(response)
    assert (terminated, truncated) == (True, False)
    assert reward == float(len(response)) == info["score"]
    assert info["response_length"] == len(response)
    assert info["reference_output"] == first["reference_output"]
    assert info["reward_backend"] == "length"
    with pytest.raises(RuntimeError):
        env.unwrapped.step("again")  # single-step episodes
    env.reset()
    with pytest.raises(TypeError):
        env.unwrapped.step(123)


def test_annotator_reward_against_reference():
    env = make_env(reward="annotator", reward_kwargs={"annotator": "longer"}, shuffle=False)
    env.reset(seed=0)
    ref = env.unwrapped.current_row["reference_output"]
    _, r_long, _, _, info = env.step(ref + " And more detail.")
    assert r_long == 1.0 and info["preference"] == 2.0 and info["annotator"] == "longer"
    assert "cost" in info and "from_cache" in info
    env.reset(options={"index": 0})
    _, r_short, _, _, info = env.step("ok")
    assert r_short == 0.0 and info["preference"] == 1.0


def test_episode_order_is_a_function_of_the_seed():
    def episodes(env, seed, n=2 * len(EVAL_IDX)):
        out = [env.reset(seed=seed)[1]["example_index"]]
        for _ in range(n - 1):
            out.append(env.reset()[1]["example_index"])
        return out

    a, b = make_env(), make_env()
    ea = episodes(a, 7)
    assert ea == episodes(b, 7)
    # each epoch visits every selected example exactly once
    assert sorted(ea[: len(EVAL_IDX)]) == sorted(ea[len(EVAL_IDX):]) == sorted(EVAL_IDX)
    assert ea != episodes(a, 8)
    assert episodes(make_env(shuffle=False), 1)[: len(EVAL_IDX)] == EVAL_IDX
    # the constructor's seed fixes an unseeded first reset
    c = make_env(seed=7)
    assert [c.reset()[1]["example_index"] for _ in range(4)] == ea[:4]


def test_module_id_form_and_train_split_reference():
    env = gym.make("alpaca_farm_env:AlpacaFarm-v0", split="val", max_examples=5, reward="length", shuffle=False)
    assert isinstance(env.unwrapped, AlpacaFarmEnv)
    val = load_split("val")
    obs, info = env.reset(seed=0)
    assert obs["instruction"] == val[0]["instruction"] and obs["input"] == val[0]["input"]
    *_, info = env.step("x")
    assert info["reference_output"] == val[0]["output"]
    assert len(env.unwrapped.rows) == 5


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown split"):
        AlpacaFarmEnv(split="nope", reward="length")
    with pytest.raises(IndexError):
        AlpacaFarmEnv(split="eval", indices=[900], reward="length")
    with pytest.raises(RuntimeError, match="reset"):
        AlpacaFarmEnv(split="eval", indices=[0], reward="length").step("x")
    env = AlpacaFarmEnv(split="eval", indices=[0], reward="length", max_response_length=5)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="max_response_length"):
        env.step("too long")


def test_backends_are_lazy_and_shared_per_spec():
    clear_reward_cache()
    kw = {"reward": "length", "reward_kwargs": {"unit": "words"}}
    e1, e2 = make_env(**kw).unwrapped, make_env(**kw).unwrapped
    assert cached_backend_count() == 0  # nothing built before the first step
    for e in (e1, e2):
        e.reset(seed=0)
        _, r, *_ = e.step("three word answer")
        assert r == 3.0
    assert cached_backend_count() == 1 and e1.reward_backend is e2.reward_backend
    e3 = make_env(reward="length").unwrapped
    e3.reset(seed=0)
    e3.step("x")
    assert e3.reward_backend is not e1.reward_backend and cached_backend_count() == 2
    inst = CountingReward()
    e4 = make_env(reward=inst).unwrapped
    e4.reset(seed=0)
    e4.step("abc")
    assert e4.reward_backend is inst and inst.calls == [1]


def test_render_ansi():
    env = make_env(render_mode="ansi", shuffle=False)
    env.reset(seed=0)
    assert env.render().endswith("### Response:")
    env.step("Hello")
    assert "Hello" in env.render() and "reward=5" in env.render()


# ------------------------------------------------------------------------------------------------ vector env
def test_make_vec_is_batched_with_one_reward_call_per_step():
    n = 3
    backend = CountingReward()
    venv = gym.make_vec("AlpacaFarm-v0", num_envs=n, split="eval", indices=EVAL_IDX[:6], reward=backend)
    assert isinstance(venv, AlpacaFarmVectorEnv)
    assert venv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    obs, info = venv.reset(seed=5)
    assert obs in venv.observation_space and len(obs["prompt"]) == n
    first_ids = list(info["example_index"])
    responses = ["a", "bb" * 10, "ccc 中文"]
    obs2, rewards, term, trunc, info2 = venv.step(responses)
    assert backend.calls == [n]  # ONE batched call for all sub-envs
    np.testing.assert_array_equal(rewards, [len(r) for r in responses])
    assert term.all() and not trunc.any()
    # same-step autoreset: finished episodes are under final_obs / final_info, obs are the next prompts
    assert info2["_final_obs"].all() and info2["_final_info"].all()
    assert list(info2["final_info"]["example_index"]) == first_ids
    assert [o["prompt"] for o in info2["final_obs"]] == list(obs["prompt"])
    eval_rows = load_eval_set("alpacafarm")
    assert list(info2["final_info"]["reference_output"]) == [eval_rows[i]["reference_output"] for i in first_ids]
    np.testing.assert_array_equal(info2["final_info"]["response_length"], [len(r) for r in responses])
    second_ids = list(info2["example_index"])
    assert sorted(first_ids + second_ids) == sorted(EVAL_IDX[:6])  # one shared order: no repeats in an epoch
    assert obs2 in venv.observation_space
    assert list(obs2["prompt"]) == [format_prompt(eval_rows[i]["instruction"], eval_rows[i]["input"]) for i in second_ids]
    venv.step(["x"] * n)
    assert backend.calls == [n, n]
    with pytest.raises(ValueError):
        venv.step(["too", "few"])
    # same seed, same episodes
    venv2 = gym.make_vec("AlpacaFarm-v0", num_envs=n, split="eval", indices=EVAL_IDX[:6], reward="length")
    assert list(venv2.reset(seed=5)[1]["example_index"]) == first_ids
    venv.close()


def test_vector_env_from_another_envs_rows_with_another_reward(data_dir):
    """``AlpacaFarmVectorEnv.from_env``: an agent re-scores a selection of its env's rows with a reward built later."""
    single = gym.make("AlpacaFarm-v0", split="unlabeled", reward="length", max_examples=20, data_dir=data_dir,
                      max_text_length=9000)
    rows = single.unwrapped.rows[5:9]
    vec = AlpacaFarmVectorEnv.from_env(single, rows, 2, reward="annotator", reward_kwargs={"annotator": "longer"}, seed=1)
    assert vec.num_envs == 2 and vec.split == "unlabeled" and vec.data_dir == data_dir
    assert vec.reward_spec == "annotator" and vec.reward_context.data_dir == str(data_dir)
    assert vec.reward_backend.annotator.name == "longer"  # the data dir travels in the context, not the kwargs
    assert vec.single_observation_space["prompt"].max_length == 9000
    obs, _ = vec.reset(options={"index": [0, 3]})
    assert list(obs["prompt"]) == [rows[0]["prompt"], rows[3]["prompt"]]
    _, rewards, *_ = vec.step(["a much longer answer than the reference, surely, " * 40, ""])
    assert rewards[0] == 1.0 and rewards[1] == 0.0  # 'longer wins' against the reference
    same = AlpacaFarmVectorEnv.from_env(vec, rows[:2], 1)  # default: the given env's reward
    assert same.reward_spec == "annotator" and same.reward_kwargs["annotator"] == "longer"
    with pytest.raises(TypeError, match="not an AlpacaFarm-v0 env"):
        AlpacaFarmVectorEnv.from_env(object(), rows, 1)


# ------------------------------------------------------------------------------------------------ base and context
class SeedRecorder(BaseReward):
    """Scores the response length and records the RewardContext of every call (it declares ``uses_context``)."""

    name = "seed_recorder"
    capabilities = frozenset({"scores_text", "uses_context"})

    def __init__(self, context=None):
        self.built_with = context
        self.contexts: list = []

    def score(self, prompts, responses, *, context=None, **row):
        self.contexts.append(context)
        return [float(len(r)) for r in responses]


def test_every_env_derives_from_the_base_and_takes_the_episode_config(data_dir):
    from alpaca_farm_env.envs import AlpacaFarmEnvBase, EpisodeConfig

    envs = [make_env(), gym.make_vec("AlpacaFarm-v0", num_envs=2, split="eval", indices=EVAL_IDX, reward="length"),
            gym.make("AlpacaFarmToken-v0", split="eval", indices=EVAL_IDX, reward="length", max_prompt_tokens=1024),
            gym.make("AlpacaFarmPairwise-v0", annotator="longer", max_examples=4, seed_mode="instruction")]
    for env in envs:
        base = env.unwrapped
        assert isinstance(base, AlpacaFarmEnvBase) and isinstance(base.config, EpisodeConfig)
        assert type(base).reset.__annotations__["return"] and type(base).step.__annotations__["return"]
        assert "Returns" in type(base).reset.__doc__ and "Returns" in type(base).step.__doc__
    assert envs[3].unwrapped.split == "preference" and envs[3].unwrapped.seed_mode == "instruction"
    assert not isinstance(object(), AlpacaFarmEnvBase)
    with pytest.raises(ValueError, match="seed_mode"):
        make_env(seed_mode="per_visit")
    with pytest.raises(TypeError, match="no_such_argument"):
        make_env(no_such_argument=1)


def test_the_context_reaches_backends_that_declare_it_and_no_other(data_dir):
    """Data dir and split in the context, one episode seed per response (a function of the reset seed), none with
    seed_mode="instruction"; a backend without the capability is called without it."""
    def run(seed_mode, seed):
        venv = gym.make_vec("AlpacaFarm-v0", num_envs=3, split="eval", indices=EVAL_IDX, data_dir=str(data_dir),
                            reward=SeedRecorder, seed_mode=seed_mode)
        venv.reset(seed=seed)
        for _ in range(2):
            venv.step(["a", "bb", "ccc"])
        return venv.unwrapped.reward_backend

    backend = run("episode", 0)
    assert backend.built_with.data_dir == str(data_dir) and backend.built_with.episode_seeds is None
    first, second = backend.contexts
    assert first.split == "eval" and first.data_dir == str(data_dir) and len(first.episode_seeds) == 3
    assert first.episode_seeds != second.episode_seeds  # fresh seeds every step
    assert run("episode", 0).contexts == backend.contexts  # ...a function of the reset seed
    assert run("episode", 1).contexts != backend.contexts
    assert all(c.episode_seeds is None and c.split == "eval" for c in run("instruction", 0).contexts)
    counting = CountingReward()  # no capability: never sees a context (its score takes none)
    env = make_env(reward=counting)
    env.reset(seed=0)
    env.step("x")
    assert counting.calls == [1]
