"""Preference collection through the vector ``AlpacaFarmPairwise-v0``: AlpacaFarm's row layout and preference encoding,
TRL's format, one annotation call per step, every instruction exactly once (a partial last step included), resume
after a failure, and the default noisy pool with instruction-keyed labels."""
from __future__ import annotations

import json

import gymnasium as gym
import pytest

from alpaca_farm_env.agents.preference_collection import CollectionConfig, collect_preferences, to_trl_preference
from alpaca_farm_env.annotators import Annotation, register_annotator
from alpaca_farm_env.data import format_prompt
from alpaca_farm_env.envs import clear_reward_cache
from alpaca_farm_env.models import load_policy


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CountingLonger:
    """A real annotator ("longer wins", equal lengths a draw) that counts its compare calls and can be made to fail
    at a given call, like an annotation service going down mid-run."""

    name = "pc_counting_longer"
    calls: list[int] = []
    fail_at_call: int | None = None

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed=0):
        CountingLonger.calls.append(len(outputs_1))
        if CountingLonger.fail_at_call is not None and len(CountingLonger.calls) >= CountingLonger.fail_at_call:
            raise ConnectionError("annotation service unavailable")
        return [Annotation(preference=1.5 if len(a) == len(b) else (2.0 if len(b) > len(a) else 1.0),
                           annotator=self.name) for a, b in zip(outputs_1, outputs_2)]


class AlwaysFirst:
    """A real annotator that never answers "draw": it always prefers output_1."""

    name = "pc_always_first"

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed=0):
        return [Annotation(preference=1.0, annotator=self.name) for _ in outputs_1]


register_annotator("pc_counting_longer", CountingLonger, override=True)
register_annotator("pc_always_first", AlwaysFirst, override=True)


@pytest.fixture(autouse=True)
def _fresh():
    clear_reward_cache()
    CountingLonger.calls.clear()
    CountingLonger.fail_at_call = None
    yield
    clear_reward_cache()


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny-llama")


def _envs(num_envs: int, n_rows: int, annotator: str = "pc_counting_longer"):
    return gym.make_vec("AlpacaFarmPairwise-v0", num_envs=num_envs, split="preference", annotator=annotator,
                        seed_mode="instruction", shuffle=False, max_examples=n_rows)


CFG = CollectionConfig(max_new_tokens=6, batch_size=4, seed=0)


def test_rows_layout_encoding_and_one_annotation_call_per_step(policy, tmp_path, data_dir):
    envs = _envs(num_envs=3, n_rows=7)
    path = tmp_path / "prefs.jsonl"
    rows = collect_preferences(policy, envs, config=CFG, output_path=path, progress=False)
    # 7 instructions on 3 sub-envs: 3 steps, the last one partial (1 real + 2 repeats), each ONE call of 3 pairs
    assert CountingLonger.calls == [3, 3, 3]
    demos = envs.unwrapped.demonstrations
    assert [(r["instruction"], r["input"]) for r in rows] == [(d["instruction"], d["input"]) for d in demos]
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows  # the file holds exactly the rows
    for r in rows:
        assert list(r) == ["instruction", "input", "output_1", "output_2", "preference", "annotator"]
        assert r["annotator"] == "pc_counting_longer"
        # output_1 is the pair's first response, as the annotator saw it: 1 = output_1 preferred, 2 = output_2
        n1, n2 = len(r["output_1"]), len(r["output_2"])
        assert r["preference"] == (1.5 if n1 == n2 else (1.0 if n1 > n2 else 2.0))
    assert {r["preference"] for r in rows} >= {1.0, 2.0}
    # two samples per instruction from the policy (different samples at temperature 1.0)
    assert all(r["output_1"] != r["output_2"] for r in rows)


def test_identical_outputs_are_draws_kept_in_file_dropped_for_trl(policy, tmp_path):
    # top_p ~ 0 keeps only the most likely token: both samples are the same text, the annotator still says "1"
    cfg = CollectionConfig(max_new_tokens=5, batch_size=4, top_p=1e-9)
    rows = collect_preferences(policy, _envs(2, 4, "pc_always_first"), config=cfg, output_path=tmp_path / "p.jsonl",
                               progress=False)
    assert len(rows) == 4 and all(r["output_1"] == r["output_2"] for r in rows)
    assert all(r["preference"] == 1.5 and r["annotator"] == "pc_always_first" for r in rows)
    assert to_trl_preference(rows) == []


def test_to_trl_preference_exact():
    rows = [
        dict(instruction="Add.", input="2 and 3", output_1="5", output_2="6", preference=1.0, annotator="a"),
        dict(instruction="Name a colour.", input="", output_1="car", output_2="red", preference=2.0, annotator="b"),
        dict(instruction="Tie.", input="", output_1="x", output_2="y", preference=1.5, annotator="c"),
        dict(instruction="Same.", input="", output_1="z", output_2="z", preference=2.0, annotator="d"),
        dict(instruction="Unlabeled.", input="", output_1="u", output_2="v", preference=None, annotator="e"),
    ]
    assert to_trl_preference(rows) == [
        {"prompt": format_prompt("Add.", "2 and 3"), "chosen": "5", "rejected": "6"},
        {"prompt": format_prompt("Name a colour."), "chosen": "red", "rejected": "car"},
    ]
    assert to_trl_preference(rows)[0]["prompt"].endswith("### Input:\n2 and 3\n\n### Response:")


def test_resume_after_a_failure_skips_done_instructions(policy, tmp_path):
    full = collect_preferences(policy, _envs(2, 7), config=CFG, output_path=tmp_path / "full.jsonl", progress=False)
    assert CountingLonger.calls == [2, 2, 2, 2]

    # the same run, killed at its 3rd step: the annotator fails there, after 2 steps were written
    CountingLonger.calls.clear()
    CountingLonger.fail_at_call = 3
    path = tmp_path / "killed.jsonl"
    with pytest.raises(ConnectionError):
        collect_preferences(policy, _envs(2, 7), config=CFG, output_path=path, progress=False)
    assert len(path.read_text().splitlines()) == 4  # 2 finished steps x 2 instructions
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"instruction": "torn by the ki')  # a write cut short by the kill

    CountingLonger.calls.clear()
    CountingLonger.fail_at_call = None
    resumed = collect_preferences(policy, _envs(2, 7), config=CFG, output_path=path, progress=False)
    assert CountingLonger.calls == [2, 2]  # only the 3 instructions left: one full step, one partial
    assert resumed == full  # same instructions, samples and labels as the uninterrupted run, each exactly once
    assert [json.loads(line) for line in path.read_text().splitlines()] == full

    # a finished file: nothing to do; n_instructions caps the instructions visited
    CountingLonger.calls.clear()
    assert collect_preferences(policy, _envs(2, 7), config=CFG, output_path=path, progress=False) == full
    assert CountingLonger.calls == []
    few = collect_preferences(policy, _envs(2, 7), config=CollectionConfig(**{**CFG.__dict__, "n_instructions": 3}),
                              output_path=tmp_path / "few.jsonl", progress=False)
    assert CountingLonger.calls == [2, 2] and [r["instruction"] for r in few] == [r["instruction"] for r in full[:3]]
    assert few[:2] == full[:2]  # the same first step (samples are seeded per step, from the step's prompts)


def test_default_noisy_pool_labels_are_instruction_keyed(policy, tmp_path):
    """The brief's env: the noisy pooled annotator (p_sim^ann) with seed_mode="instruction" labels a dataset once: the
    same pairs collected twice get the same labels and pool members."""
    kw = dict(num_envs=2, split="preference", annotator="noisy_pooled", seed_mode="instruction", shuffle=False,
              max_examples=4)
    a = collect_preferences(policy, gym.make_vec("AlpacaFarmPairwise-v0", **kw), config=CFG,
                            output_path=tmp_path / "a.jsonl", progress=False)
    b = collect_preferences(policy, gym.make_vec("AlpacaFarmPairwise-v0", **kw), config=CFG,
                            output_path=tmp_path / "b.jsonl", progress=False)
    assert len(a) == 4 and a == b
    assert all(r["preference"] in (1.0, 2.0, 1.5) for r in a)
    assert all(r["annotator"] and r["annotator"] != "noisy_pooled" for r in a)  # the pool member that answered


def test_rejects_a_single_env(policy, tmp_path):
    env = gym.make("AlpacaFarmPairwise-v0", split="preference", annotator="longer", max_examples=2)
    with pytest.raises(TypeError, match="vector"):
        collect_preferences(policy, env, config=CFG, output_path=tmp_path / "x.jsonl", progress=False)
