"""``gym.make("AlpacaFarm-v0", prompts=...)``: a user's own prompts as a list of dicts, a JSON/JSONL file or a
``datasets.Dataset``, checked row by row at ``make()``; a reward that needs a reference refuses rows without one
before any step."""
from __future__ import annotations

import json

import gymnasium as gym
import pytest

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.data.prompts import format_prompt
from alpaca_farm_env.errors import ConfigError

ROWS = [
    {"instruction": "Name a primary colour.", "reference_output": "Blue."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "reference_output": "5", "dataset": "arith"},
    {"instruction": "Say hello.", "input": None, "reference_output": "Hello!"},
]


def _rows_of(prompts, **kw):
    env = gym.make("AlpacaFarm-v0", prompts=prompts, reward="length", shuffle=False, **kw)
    rows = env.unwrapped.rows
    env.close()
    return rows


def test_a_list_a_jsonl_file_a_json_file_and_a_dataset_give_the_same_rows(tmp_path):
    from datasets import Dataset

    jsonl, js = tmp_path / "p.jsonl", tmp_path / "p.json"
    jsonl.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")  # a trailing blank line is allowed
    js.write_text(json.dumps(ROWS))
    # a Dataset has every column in every row (None where a row lacks it): the same rows
    columns = ("instruction", "input", "reference_output", "dataset")
    dataset = Dataset.from_dict({c: [r.get(c) for r in ROWS] for c in columns})
    by_source = [_rows_of(ROWS), _rows_of(str(jsonl)), _rows_of(js), _rows_of(dataset)]
    assert all(rows == by_source[0] for rows in by_source[1:])
    rows = by_source[0]
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in ROWS]
    assert [r["input"] for r in rows] == ["", "2 and 3", ""]  # absent or None input: ""
    assert rows[1]["prompt"] == format_prompt("Add the numbers.", "2 and 3")  # the AlpacaFarm template
    assert [r["dataset"] for r in rows] == ["custom", "arith", "custom"] and [r["row_index"] for r in rows] == [0, 1, 2]


def test_the_env_steps_through_own_prompts_with_a_reward_and_selects_like_a_split():
    env = gym.make("AlpacaFarm-v0", prompts=ROWS, reward="length", shuffle=False)
    assert env.unwrapped.split == "custom"
    seen = []
    for _ in range(len(ROWS)):
        obs, _ = env.reset()
        seen.append(obs["instruction"])
        _, reward, terminated, _, info = env.step("four")
        assert terminated and reward == 4.0
    assert seen == [r["instruction"] for r in ROWS]
    env.close()
    assert [r["row_index"] for r in _rows_of(ROWS, indices=[2, 0])] == [2, 0]
    assert len(_rows_of(ROWS, max_examples=2)) == 2


@pytest.mark.parametrize("prompts, words", [
    ([{"instruction": "ok"}, {"instr": "x"}], "prompts row 1: missing 'instruction' (its keys: ['instr'])"),
    ([{"output": "x"}], "rename 'output' to 'reference_output'"),
    ([{"instruction": 3}], "prompts row 0: 'instruction' must be a string, got int"),
    ([{"instruction": "a", "reference_output": ["b"]}], "row 0: 'reference_output' must be a string, got list"),
    ([{"instruction": "  "}], "prompts row 0: 'instruction' is empty"),
    (["just text"], "prompts row 0: expected a dict with 'instruction', got str"),
    ([], "prompts is empty"),
    ({"instruction": "a"}, "prompts must be a list of dicts, a .json/.jsonl path or a datasets.Dataset, got dict"),
    ("no/such/file.jsonl", "does not exist"),
])
def test_bad_prompts_raise_one_line_errors_naming_the_row(prompts, words):
    with pytest.raises(ConfigError) as err:
        gym.make("AlpacaFarm-v0", prompts=prompts, reward="length")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_bad_prompt_files_are_named_with_their_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a"}\n{"instruction": \n')
    with pytest.raises(ConfigError, match=r"bad.jsonl' line 2: not JSON"):
        gym.make("AlpacaFarm-v0", prompts=bad, reward="length")
    obj = tmp_path / "obj.json"
    obj.write_text('{"instruction": "a"}')
    with pytest.raises(ConfigError, match="expected a JSON list of rows, got dict"):
        gym.make("AlpacaFarm-v0", prompts=obj, reward="length")
    txt = tmp_path / "p.txt"
    txt.write_text("a")
    with pytest.raises(ConfigError, match="expected a .json or .jsonl file"):
        gym.make("AlpacaFarm-v0", prompts=txt, reward="length")


def test_a_reward_that_needs_a_reference_refuses_at_make_not_at_the_first_step():
    no_ref = [{"instruction": "Name a colour.", "reference_output": "Red."}, {"instruction": "Say hi."}]
    with pytest.raises(ConfigError, match="judges each response against the row's reference_output, and prompts row "
                                          "1 has none"):
        gym.make("AlpacaFarm-v0", prompts=no_ref)  # the default reward: the annotator against the reference
    with pytest.raises(ConfigError, match="prompts row 1 has none"):
        gym.make("AlpacaFarmToken-v0", prompts=no_ref, tokenizer="byte")
    # a reward that reads no reference takes the same rows
    env = gym.make("AlpacaFarm-v0", prompts=no_ref, reward="length")
    env.reset(seed=0)
    assert env.step("abc")[1] == 3.0
    # and the pairwise env compares two responses, with no reference
    pair = gym.make("AlpacaFarmPairwise-v0", prompts=no_ref, annotator="longer")
    pair.reset(seed=0)
    pair.close()


def test_split_and_prompts_together_are_refused():
    with pytest.raises(ConfigError, match="give split='eval' or prompts=, not both"):
        gym.make("AlpacaFarm-v0", prompts=ROWS, split="eval", reward="length")


@pytest.mark.slow
def test_own_prompts_with_references_are_judged_by_the_default_annotator():
    env = gym.make("AlpacaFarm-v0", prompts=ROWS, shuffle=False)
    obs, _ = env.reset(seed=0)
    _, reward, _, _, info = env.step("Blue is a primary colour.")
    assert obs["instruction"] == ROWS[0]["instruction"]
    assert 0.0 <= reward <= 1.0 and info["reference_output"] == "Blue."
    env.close()
