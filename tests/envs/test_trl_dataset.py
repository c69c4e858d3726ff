"""``envs.as_trl_dataset``: an env's prompts in the columns TRL's reward functions receive, and
``rewards.as_trl_reward_func`` scoring them as the env's own step does (an annotator judges the instruction, never the
templated prompt; without an instruction column it refuses)."""
from __future__ import annotations

import gymnasium as gym
import pytest

import alpaca_farm_env
from alpaca_farm_env.annotators import Annotation, register_annotator
from alpaca_farm_env.envs import as_trl_dataset
from alpaca_farm_env.rewards import as_trl_reward_func

COLUMNS = ["prompt", "instruction", "input", "reference_output"]


@register_annotator("test_trl_raw_instruction", override=True)
class RawInstructionAnnotator:
    """Prefers output_2 when it was given the raw instruction, output_1 when it was given the AlpacaFarm template."""

    name = "test_trl_raw_instruction"

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed=0):
        return [Annotation(preference=1.0 if i.startswith("Below is an instruction") else 2.0, annotator=self.name)
                for i in instructions]


def test_columns_follow_the_env_rows(data_dir):
    env = gym.make("AlpacaFarm-v0", split="unlabeled", reward="length", max_examples=5, shuffle=False,
                   data_dir=data_dir)
    ds = as_trl_dataset(env)
    assert ds.column_names == COLUMNS and len(ds) == 5
    rows = env.unwrapped.rows
    assert ds["instruction"] == [r["instruction"] for r in rows] and ds["input"] == [r["input"] for r in rows]
    assert ds["reference_output"] == [r["reference_output"] for r in rows]
    obs, _ = env.reset(options={"index": 3})
    assert ds[3]["prompt"] == obs["prompt"] and ds[3]["prompt"].startswith("Below is an instruction")
    # any split, and a vector env: the eval split's reference is Davinci003's
    vec = gym.make_vec("AlpacaFarm-v0", num_envs=2, split="eval", reward="length", max_examples=3, data_dir=data_dir)
    ev = as_trl_dataset(vec)
    assert len(ev) == 3 and ev["reference_output"] == [r["reference_output"] for r in vec.unwrapped.rows]
    assert alpaca_farm_env.as_trl_dataset is as_trl_dataset  # exported at the package's top level too


def test_refuses_what_is_not_an_alpaca_farm_env():
    with pytest.raises(TypeError, match="AlpacaFarm env"):
        as_trl_dataset(gym.make("CartPole-v1"))


def test_reward_func_scores_the_instruction_as_the_env_step_does(data_dir):
    kwargs = {"annotator": "test_trl_raw_instruction"}
    env = gym.make("AlpacaFarm-v0", split="unlabeled", reward="annotator", reward_kwargs=kwargs, max_examples=4,
                   shuffle=False, seed_mode="instruction", data_dir=data_dir)
    ds = as_trl_dataset(env)
    env.reset(options={"index": 0})
    _, env_reward, *_ = env.step("an answer")
    f = as_trl_reward_func("annotator", **kwargs)
    columns = {k: list(ds[k]) for k in COLUMNS[1:]}  # TRL passes lists
    scores = f(prompts=ds["prompt"], completions=["an answer"] * 4, completion_ids=[[1]] * 4, **columns)
    assert scores == [env_reward] * 4 == [1.0] * 4  # the raw instruction was judged, as the env judges it
    with pytest.raises(ValueError, match="no 'instruction' column"):
        f(prompts=ds["prompt"], completions=["an answer"] * 4, reference_output=list(ds["reference_output"]))


def test_reward_func_never_passes_token_ids():
    seen = {}

    def spy(prompts, responses, **row):
        seen.update(row)
        return [0.0] * len(responses)

    as_trl_reward_func(spy)(prompts=["p", "q"], completions=["c", "d"], completion_ids=[[1], [2]], input=["", ""])
    assert seen == {"input": ["", ""]}
