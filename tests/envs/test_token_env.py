"""AlpacaFarmToken-v0: the token-level MDP, its checkers, and a short SB3 PPO run."""
from __future__ import annotations

import csv
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.data import format_prompt, load_eval_set
from alpaca_farm_env.envs.token_env import AlpacaFarmTokenEnv
from alpaca_farm_env.models import byte_tokenizer

EVAL_IDX = [0, 3, 17, 42, 101]
EOS = 258  # the byte tokenizer: 0..255 bytes, <pad>=256, <s>=257, </s>=258


def make_env(**kw) -> gym.Env:
    kw = {"split": "eval", "indices": EVAL_IDX, "reward": "length", "max_prompt_tokens": 1024, "max_new_tokens": 8, **kw}
    return gym.make("AlpacaFarmToken-v0", **kw)


def test_token_env_passes_gymnasium_and_sb3_checkers():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make_env()
    assert isinstance(env.unwrapped, AlpacaFarmTokenEnv)
    assert env.action_space == gym.spaces.Discrete(259)
    check_env(env.unwrapped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # check_env warns that it was given a wrapped env
        check_env(env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3 accepts the Dict-of-int-Box observation without complaint
        sb3_check_env(env)


def test_prompt_layout_tokens_eos_and_terminal_reward():
    env = make_env(shuffle=False, token_info=True)
    tok = byte_tokenizer()
    obs, info = env.reset(seed=0)
    row = load_eval_set()[EVAL_IDX[0]]
    ids = tok(format_prompt(row["instruction"], row["input"])).input_ids
    P = env.unwrapped.max_prompt_tokens
    assert obs["prompt_ids"].shape == (P,) and obs["response_ids"].shape == (8,)
    np.testing.assert_array_equal(obs["prompt_ids"][P - len(ids):], ids)  # left-padded
    assert (obs["prompt_ids"][: P - len(ids)] == tok.pad_token_id).all()
    assert obs["prompt_mask"].sum() == len(ids) == info["prompt_tokens"] and obs["prompt_mask"][-1] == 1
    text = "hé!"  # 4 bytes, 3 characters: the backend must see decoded text
    for k, b in enumerate(text.encode()):
        obs, r, term, trunc, step_info = env.step(b)
        assert (r, term, trunc) == (0.0, False, False)
        assert obs["response_ids"][k] == b and obs["response_mask"].sum() == k + 1
        assert step_info["token_id"] == b
    obs, r, term, trunc, info = env.step(EOS)
    assert term and not trunc
    assert info["response"] == text and r == float(len(text)) == info["score"]
    assert info["response_tokens"] == 5 and info["finished_with_eos"] is True
    assert info["reference_output"] == row["reference_output"]


def test_truncation_at_max_new_tokens():
    env = make_env(max_new_tokens=4, truncated_reward=None)
    env.reset(seed=1)
    rewards = []
    for b in b"abcd":
        _, r, term, trunc, info = env.step(b)
        rewards.append(r)
    assert rewards == [0.0, 0.0, 0.0, 4.0] and trunc and not term
    assert info["response"] == "abcd" and info["finished_with_eos"] is False
    pen = make_env(max_new_tokens=2, truncated_reward=-1.0)
    pen.reset(seed=1)
    pen.step(97)
    assert pen.step(98)[1] == -1.0


def test_prompt_overflow_filter_and_truncate():
    lengths = [len(byte_tokenizer()(format_prompt(r["instruction"], r["input"])).input_ids)
               for r in (load_eval_set()[i] for i in EVAL_IDX)]
    limit = sorted(lengths)[2]  # some prompts fit, some do not
    with pytest.warns(UserWarning, match="filtered out"):
        env = AlpacaFarmTokenEnv(split="eval", indices=EVAL_IDX, reward="length", max_prompt_tokens=limit)
    assert env.num_filtered == sum(n > limit for n in lengths) and len(env.rows) == sum(n <= limit for n in lengths)
    with pytest.raises(ValueError, match="prompt_overflow"):
        AlpacaFarmTokenEnv(split="eval", indices=EVAL_IDX, reward="length", max_prompt_tokens=8)
    tr = AlpacaFarmTokenEnv(split="eval", indices=EVAL_IDX, reward="length", max_prompt_tokens=16,
                            prompt_overflow="truncate", shuffle=False)
    obs, info = tr.reset(seed=0)
    assert info["prompt_truncated"] and obs["prompt_mask"].all()
    assert byte_tokenizer().decode(obs["prompt_ids"]).endswith("### Response:")  # the end of the prompt is kept


def test_tokenizer_object_is_used_as_given():
    tok = byte_tokenizer(add_bos=False)
    env = AlpacaFarmTokenEnv(split="eval", indices=[0], reward="length", tokenizer=tok, max_prompt_tokens=512)
    obs, _ = env.reset(seed=0)
    first = obs["prompt_ids"][obs["prompt_mask"].astype(bool)][0]
    assert first == ord("B")  # "Below is an instruction ...", no <s>
    with pytest.raises(TypeError):
        AlpacaFarmTokenEnv(split="eval", indices=[0], reward="length", tokenizer=object())


def test_sb3_ppo_runs_on_token_env(tmp_path):
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure

    torch.manual_seed(0)
    env = make_env(max_prompt_tokens=32, prompt_overflow="truncate", max_new_tokens=8)
    model = PPO(
        "MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=2, learning_rate=1e-3, seed=0, device="cpu",
        policy_kwargs={"net_arch": [16]}, verbose=0,
    )
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    rows = list(csv.DictReader(open(tmp_path / "progress.csv")))
    assert len(rows) >= 3
    trained = [r for r in rows if r.get("train/value_loss")]
    assert trained, "PPO never ran an update"
    for key in ("train/value_loss", "train/policy_gradient_loss", "train/entropy_loss", "rollout/ep_rew_mean"):
        vals = [float(r[key]) for r in trained if r.get(key)]
        assert vals and all(math.isfinite(v) for v in vals), key
    # episodes of at most 8 tokens => at least 32 finished; the length reward is positive for non-empty text
    assert len(model.ep_info_buffer) >= 32
    assert all(0 < ep["l"] <= 8 for ep in model.ep_info_buffer)
