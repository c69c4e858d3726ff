"""The ``reward_model`` backend on a small random sequence-classification model saved to a folder."""
from __future__ import annotations

import pytest
import torch

from alpaca_farm_env.data import format_prompt
from alpaca_farm_env.rewards import list_rewards, make_reward
from alpaca_farm_env.rewards import reward_model as rm


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory):
    return rm.tiny_reward_model(tmp_path_factory.mktemp("rm") / "tiny-rm", seed=0)


PROMPTS = [format_prompt("Name a colour."), format_prompt("Add the numbers.", "2 and 3"), format_prompt("Say hi.")]
RESPONSES = ["\nRed.", "\nThe sum of 2 and 3 is 5, because counting on from 2 gives 3, 4, 5.", ""]


def test_registered_and_made_by_name(rm_path):
    assert "reward_model" in list_rewards()
    r = make_reward("reward_model", model_name_or_path=rm_path)
    assert isinstance(r, rm.RewardModelReward) and r.name == "reward_model:tiny-rm"


def test_batch_equals_single_and_scores_prompt_plus_response(rm_path):
    r = rm.RewardModelReward(rm_path, batch_size=2)
    batched = r.score(PROMPTS, RESPONSES)
    single = [r.score([p], [x])[0] for p, x in zip(PROMPTS, RESPONSES)]
    assert len(batched) == 3 and all(isinstance(s, float) for s in batched)
    assert batched == pytest.approx(single, abs=1e-5)
    assert batched == pytest.approx(r.score_texts([p + x for p, x in zip(PROMPTS, RESPONSES)]), abs=1e-5)
    assert len(set(round(s, 6) for s in batched)) == 3, "different texts should get different rewards"


def test_no_eos_appended_reward_read_at_last_token(rm_path):
    """AlpacaFarm scores the bare prompt+response string (end_sequence_with_eos=False): <s> + bytes, nothing after."""
    r = rm.RewardModelReward(rm_path)
    text = PROMPTS[0] + RESPONSES[0]
    ids = torch.tensor([[257] + list(text.encode("utf-8"))])
    with torch.no_grad():
        expected = float(r.model(input_ids=ids).logits[0, 0])
        with_eos = float(r.model(input_ids=torch.cat([ids, torch.tensor([[258]])], 1)).logits[0, 0])
    assert r.score_texts([text])[0] == pytest.approx(expected, abs=1e-5)
    assert abs(with_eos - expected) > 1e-6


def test_truncation_keeps_the_first_max_length_tokens(rm_path):
    r = rm.RewardModelReward(rm_path, max_length=20)
    long = "abcdefghijklmnopqrstuvwxyz" * 4
    assert r.score_texts([long])[0] == pytest.approx(r.score_texts([long[:19]])[0], abs=1e-5)


def test_models_are_loaded_lazily_and_shared(rm_path):
    rm.clear_cache()
    a = rm.RewardModelReward(rm_path)
    assert not rm._CACHE, "loading must wait for the first score"
    a.score(PROMPTS[:1], RESPONSES[:1])
    b = make_reward("reward_model", model_name_or_path=str(rm_path), batch_size=1)
    assert b.model is a.model and len(rm._CACHE) == 1
    c = rm.RewardModelReward(rm_path, dtype="bfloat16")
    assert c.model is not a.model and c.model.dtype == torch.bfloat16 and len(rm._CACHE) == 2
    assert c.score(PROMPTS, RESPONSES) == pytest.approx(a.score(PROMPTS, RESPONSES), abs=0.1)


def test_errors(rm_path, tmp_path):
    r = rm.RewardModelReward(rm_path)
    with pytest.raises(ValueError):
        r.score(PROMPTS, RESPONSES[:1])
    with pytest.raises(ValueError):
        rm.RewardModelReward(rm_path, batch_size=0)
    with pytest.raises(OSError, match="cannot load reward model"):
        rm.RewardModelReward(tmp_path / "missing").score(["p"], ["r"])


@pytest.mark.slow
def test_train_reward_model_learns_a_preference(tmp_path):
    """TRL RewardTrainer on preference rows (AlpacaFarm's columns) moves pairwise accuracy from chance-or-worse to ~1."""
    base = rm.tiny_reward_model(tmp_path / "base", seed=0)
    endings = (" is great!", " is bad?")
    untrained = rm.RewardModelReward(base)
    probe = untrained.score_texts([format_prompt("Describe item 0.") + " Item 0" + e for e in endings])
    good, bad = (endings[1], endings[0]) if probe[0] >= probe[1] else endings  # prefer what the base model ranks lower
    rows = []
    for i in range(32):
        pref = 1 + i % 2
        g, b = f" Item {i}{good}", f" Item {i}{bad}"
        rows.append(dict(instruction=f"Describe item {i}.", input="", output_1=g if pref == 1 else b,
                         output_2=b if pref == 1 else g, preference=pref))
    rows.append(dict(instruction="x", input="", output_1="a", output_2="b", preference=1.5))  # a draw: skipped

    def accuracy(reward) -> float:
        prompts = [format_prompt(r["instruction"]) for r in rows[:-1]]
        s_good = reward.score(prompts, [f" Item {i}{good}" for i in range(32)])
        s_bad = reward.score(prompts, [f" Item {i}{bad}" for i in range(32)])
        return sum(x > y for x, y in zip(s_good, s_bad)) / 32

    before = accuracy(untrained)
    out = rm.train_reward_model(rows, base, tmp_path / "trained", learning_rate=1e-3, num_train_epochs=3,
                                per_device_train_batch_size=8, gradient_accumulation_steps=1, n_eval=0)
    assert (out / "config.json").is_file() and not list(tmp_path.glob("trained.tmp-*"))
    import torch
    from accelerate.state import AcceleratorState

    if not torch.cuda.is_available():  # float32 on CPU: the process-wide Accelerate state later trainers inherit
        assert AcceleratorState().mixed_precision == "no"
    after = accuracy(rm.RewardModelReward(out))
    assert before <= 0.5 and after >= 0.9
    with pytest.raises(ValueError, match="no usable preference rows"):
        rm.train_reward_model(rows[-1:], base, tmp_path / "none")
