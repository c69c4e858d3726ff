"""The three methods that learn from collected preference pairs: ``binary_feedme``, ``binary_reward_conditioning``
and ``dpo``. Exact data transformations (which output is the target for preference 1 vs 2, draws and unlabeled rows
skipped, the conditioning tokens, their ids and place, the loss mask, DPO's chosen/rejected), then each method on the
tiny random Llama lowers its own training loss on 16 synthetic pairs whose preferred output says "banana"."""
from __future__ import annotations

import copy
import dataclasses
import json
import math

import gymnasium as gym
import pandas as pd
import pytest
import torch

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.agents import list_agents, make_agent
from alpaca_farm_env.agents.binary_feedme import BinaryFeedMEConfig, feedme_pairs
from alpaca_farm_env.agents.binary_reward_conditioning import (
    RewardConditioningConfig, add_reward_tokens, reward_conditioning_pairs)
from alpaca_farm_env.agents.common import preference_pairs
from alpaca_farm_env.agents.dpo import DPOTrainingConfig, dpo_rows, implicit_rewards
from alpaca_farm_env.agents.sft_loop import IGNORE_INDEX, SFTConfig, collate, sft_example
from alpaca_farm_env.data import format_prompt
from alpaca_farm_env.models import Policy, load_policy
from alpaca_farm_env.models.presets import tiny_llama
from alpaca_farm_env.utils import stable_hash

BOS, EOS, POS, NEG = 257, 258, 259, 260  # byte tokenizer: 259 tokens, so the two reward tokens get 259 and 260
METHODS = ("binary_feedme", "binary_reward_conditioning", "dpo")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_rows() -> list[dict]:
    """16 labelled pairs (preference 1 on even i, 2 on odd i; the preferred output says "banana"), then a draw, a
    legacy draw (0), an unlabeled row and two identical outputs (a draw whatever the label), which every method must
    skip."""
    rows = []
    for i in range(16):
        good, bad = f"banana {i}", f"no {i}"
        inp = f"basket {i}" if i % 4 == 0 else ""
        o1, o2, pref = (good, bad, 1) if i % 2 == 0 else (bad, good, 2)
        rows.append({"instruction": f"Name a fruit ({i}).", "input": inp, "output_1": o1, "output_2": o2,
                     "preference": pref})
    rows.append({"instruction": "Draw.", "input": "", "output_1": "tie a", "output_2": "tie b", "preference": 1.5})
    rows.append({"instruction": "Legacy draw.", "input": "", "output_1": "x", "output_2": "y", "preference": 0})
    rows.append({"instruction": "Unlabeled.", "input": "", "output_1": "u", "output_2": "v", "preference": None})
    rows.append({"instruction": "Same.", "input": "", "output_1": "same", "output_2": "same", "preference": 2})
    return rows


# ------------------------------------------------------------------------------------------------ data transforms
def test_preference_pairs_pick_the_preferred_output_and_skip_draws():
    rows = synthetic_rows()
    pairs = preference_pairs(rows)
    assert len(pairs) == 16  # the draws, the unlabeled row and the identical outputs are gone
    assert pairs[0]["chosen"] == rows[0]["output_1"] == "banana 0"  # preference 1 -> output_1
    assert pairs[0]["rejected"] == rows[0]["output_2"] == "no 0"
    assert pairs[1]["chosen"] == rows[1]["output_2"] == "banana 1"  # preference 2 -> output_2
    assert pairs[1]["rejected"] == rows[1]["output_1"] == "no 1"
    assert all(p["chosen"].startswith("banana") and p["rejected"].startswith("no") for p in pairs)
    assert pairs[0]["prompt"] == format_prompt("Name a fruit (0).", "basket 0")  # the with-input template
    assert pairs[1]["prompt"] == format_prompt("Name a fruit (1).") and "### Input:" not in pairs[1]["prompt"]
    assert not any(p["instruction"] in ("Draw.", "Legacy draw.", "Unlabeled.", "Same.") for p in pairs)
    # a DataFrame (pandas NaN for a missing input and for an unlabeled preference) gives the same pairs
    frame = pd.DataFrame(rows)
    frame.loc[1, "input"] = float("nan")
    assert preference_pairs(frame) == pairs
    # soft labels count for the side they lean to
    soft = preference_pairs([{**rows[0], "preference": 1.2}, {**rows[0], "preference": 1.8}])
    assert [s["chosen"] for s in soft] == ["banana 0", "no 0"]


def test_preference_pairs_refuse_unusable_data():
    with pytest.raises(ValueError, match="has a winner"):
        preference_pairs(synthetic_rows()[16:])  # draws and unlabeled only
    with pytest.raises(ValueError, match="lacks"):
        preference_pairs([{"instruction": "a", "output_1": "b", "preference": 1}])
    with pytest.raises(ValueError, match="outside"):
        preference_pairs([{**synthetic_rows()[0], "preference": 3}])


def test_feedme_targets_are_the_preferred_outputs():
    rows = synthetic_rows()
    pairs = feedme_pairs(rows)
    assert pairs[0] == (format_prompt("Name a fruit (0).", "basket 0"), "banana 0")
    assert pairs[1] == (format_prompt("Name a fruit (1)."), "banana 1")
    assert [o for _, o in pairs] == [f"banana {i}" for i in range(16)]


def test_reward_conditioning_pairs_double_the_data():
    pairs = reward_conditioning_pairs(synthetic_rows(), "<reward_0>", "<reward_1>")
    assert len(pairs) == 32
    prompt1 = format_prompt("Name a fruit (1).")
    assert pairs[2] == ("<reward_0>" + prompt1, "banana 1")  # preference 2: output_2 behind the positive token
    assert pairs[3] == ("<reward_1>" + prompt1, "no 1")  # ... output_1 behind the negative one
    assert all(p.startswith("<reward_0>") == o.startswith("banana") for p, o in pairs)
    assert RewardConditioningConfig().positive_token == "<reward_0>"  # the reference's best-quantile token
    with pytest.raises(ValueError, match="different"):
        RewardConditioningConfig(positive_token="<r>", negative_token="<r>")


def test_reward_tokens_ids_embeddings_position_and_loss_mask():
    policy = load_policy("tiny-llama")
    emb_in = policy.model.get_input_embeddings().weight.detach().clone()
    emb_out = policy.model.get_output_embeddings().weight.detach().clone()
    assert add_reward_tokens(policy, ["<reward_0>", "<reward_1>"]) == [POS, NEG]
    tok = policy.tokenizer
    assert len(tok) == 261 and policy.model.get_input_embeddings().weight.shape[0] == 261
    for new, old in ((policy.model.get_input_embeddings().weight, emb_in),
                     (policy.model.get_output_embeddings().weight, emb_out)):
        assert torch.equal(new[:259], old)  # old rows untouched
        for i in (POS, NEG):  # new rows: the mean of the old ones (stable_resize_token_embeddings)
            assert torch.allclose(new[i], old.mean(dim=0), atol=1e-6)
    # the token is prepended to the prompt text: after BOS, before the template's first byte
    prompt, output = reward_conditioning_pairs(synthetic_rows())[0]
    ex = sft_example(tok, prompt, output, 512)
    n_source = len(tok(prompt).input_ids)
    assert ex["input_ids"][:3] == [BOS, POS, ord("B")]
    assert n_source == 2 + len(format_prompt("Name a fruit (0).", "basket 0").encode())
    assert ex["labels"][:n_source] == [IGNORE_INDEX] * n_source  # prompt and conditioning token masked
    assert ex["labels"][n_source:] == list(b"banana 0") + [EOS]  # output + EOS learned
    neg = sft_example(tok, reward_conditioning_pairs(synthetic_rows())[1][0], "no 0", 512)
    assert neg["input_ids"][1] == NEG and neg["labels"][1] == IGNORE_INDEX
    assert tok.decode([POS, ord("a")], skip_special_tokens=True) == "a"  # special: never in decoded responses
    # adding them again changes nothing
    before = policy.model.get_input_embeddings().weight.detach().clone()
    assert add_reward_tokens(policy, ["<reward_0>", "<reward_1>"]) == [POS, NEG] and len(tok) == 261
    assert torch.equal(policy.model.get_input_embeddings().weight, before)


def test_dpo_rows_map_chosen_and_rejected():
    rows = dpo_rows(synthetic_rows())
    assert len(rows) == 16 and set(rows[0]) == {"prompt", "chosen", "rejected"}
    assert rows[0] == {"prompt": format_prompt("Name a fruit (0).", "basket 0"), "chosen": "banana 0",
                       "rejected": "no 0"}
    assert rows[1] == {"prompt": format_prompt("Name a fruit (1)."), "chosen": "banana 1", "rejected": "no 1"}


def test_pairs_collected_through_the_pairwise_env(data_dir):
    """Rows built from ``AlpacaFarmPairwise-v0`` (annotator "longer": the longer response wins) in AlpacaFarm's layout:
    the chosen output is the longer one whichever side it was on, and equal lengths (a draw) are dropped."""
    env = gym.make("AlpacaFarmPairwise-v0", split="preference", annotator="longer", max_examples=3)
    rows = []
    for first, second in (("a long answer here", "short"), ("short", "a long answer here"), ("same", "same")):
        obs, _ = env.reset(seed=len(rows))
        *_, info = env.step((first, second))
        rows.append({"instruction": obs["instruction"], "input": obs["input"], "output_1": first, "output_2": second,
                     "preference": info["preference"]})
    assert [r["preference"] for r in rows] == [1.0, 2.0, 1.5]
    rows_dpo = dpo_rows(rows)
    assert [(r["chosen"], r["rejected"]) for r in rows_dpo] == [("a long answer here", "short")] * 2
    assert rows_dpo[0]["prompt"] == format_prompt(rows[0]["instruction"], rows[0]["input"])


def test_registered_with_protocol_and_paper_defaults():
    assert set(METHODS) <= set(list_agents())
    for name in METHODS:
        agent = make_agent(name)
        assert agent.ENVS == {} and agent.STAGES == ("policy", "preferences", "output_dir")
        assert agent.temperature == 0.7  # evaluation decoding
        with pytest.raises(RuntimeError, match="fit"):
            agent.respond([{"instruction": "x", "input": ""}])
        with pytest.raises(ValueError, match="unknown"):
            make_agent(name, config={"no_such_field": 1})
    # FeedME: the sft.sh recipe (3 epochs, lr 2e-5, batch 8 x 16 = 128), inferred
    assert dataclasses.asdict(BinaryFeedMEConfig()) == dataclasses.asdict(SFTConfig())
    d = DPOTrainingConfig()  # dpo.sh
    assert (d.beta, d.learning_rate, d.num_train_epochs, d.lr_scheduler_type, d.warmup_ratio, d.max_length) == (
        0.1, 1e-6, 2.0, "cosine", 0.03, 512)
    assert d.per_device_batch_size * d.gradient_accumulation_steps == 64


# ------------------------------------------------------------------------------------------------ training
# one optimizer step per epoch over all examples (batch 8 x 2 accumulation >= 16 pairs): the loop's logged loss at a
# step is the loss over the whole training set before that step's update
TINY_SFT = {"num_train_epochs": 10, "learning_rate": 3e-3, "warmup_ratio": 0.0, "per_device_batch_size": 8,
            "gradient_accumulation_steps": 2, "save_steps": 1000}
TINY_DPO = {"num_train_epochs": 5, "learning_rate": 1e-3, "warmup_ratio": 0.0, "per_device_batch_size": 8,
            "gradient_accumulation_steps": 2}
GEN = {"max_new_tokens": 6, "batch_size": 4}
OBS = [{"instruction": "Name a fruit (3).", "input": ""}, {"instruction": "Name a fruit (4).", "input": "basket 4"}]


@torch.no_grad()
def sft_loss(policy: Policy, pairs) -> float:
    """Mean token cross-entropy over the learned tokens (output + EOS) of ``pairs``, one batch."""
    batch = collate([sft_example(policy.tokenizer, p, o, 512) for p, o in pairs], policy.tokenizer.pad_token_id)
    logits = policy.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                   batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_INDEX))


def test_binary_feedme_lowers_its_loss_and_resumes(tmp_path):
    rows = synthetic_rows()
    policy = load_policy("tiny-llama")
    before = sft_loss(policy, feedme_pairs(rows))
    agent = make_agent("binary_feedme", config=TINY_SFT, **GEN)
    agent.fit({}, policy=policy, preferences=rows, output_dir=str(tmp_path))
    after = sft_loss(agent.policy, feedme_pairs(rows))
    assert after < before - 0.5, (before, after)
    assert agent.summary["examples"] == 16 and agent.summary["steps"] == 10
    assert agent.summary["first_loss"] == pytest.approx(before, rel=1e-4)  # the loop saw exactly these targets
    responses = agent.respond(OBS)
    assert len(responses) == 2 and all(isinstance(r, str) for r in responses)
    # a rerun on the finished output_dir loads the trained model instead of training the fresh policy
    again = make_agent("binary_feedme", config=TINY_SFT, **GEN)
    again.fit({}, policy=load_policy("tiny-llama"), preferences=rows, output_dir=str(tmp_path))
    assert sft_loss(again.policy, feedme_pairs(rows)) == pytest.approx(after, rel=1e-5)
    assert again.respond(OBS) == responses
    # ... but not for other data, another config or another start policy
    with pytest.raises(ValueError, match="data"):
        make_agent("binary_feedme", config=TINY_SFT).fit({}, policy=load_policy("tiny-llama"),
                                                          preferences=rows[1:], output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="config"):
        make_agent("binary_feedme", config={**TINY_SFT, "learning_rate": 1e-3}).fit(
            {}, policy=load_policy("tiny-llama"), preferences=rows, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="start"):
        make_agent("binary_feedme", config=TINY_SFT).fit({}, policy=tiny_llama(seed=1), preferences=rows,
                                                          output_dir=str(tmp_path))


@pytest.mark.slow
def test_binary_reward_conditioning_lowers_its_loss_and_conditions_generation(tmp_path):
    rows = synthetic_rows()
    policy = load_policy("tiny-llama")
    pairs = reward_conditioning_pairs(rows)
    agent = make_agent("binary_reward_conditioning", config=TINY_SFT, **GEN)
    agent.fit({}, policy=policy, preferences=rows, output_dir=str(tmp_path))
    assert agent.summary["examples"] == 32
    before = agent.summary["first_loss"]  # whole set, after adding the tokens, before the first update
    after = sft_loss(agent.policy, pairs)
    assert after < before - 0.5, (before, after)
    emb = agent.policy.model.get_input_embeddings().weight
    assert not torch.allclose(emb[POS], emb[NEG])  # equal at the start (both the mean): training told them apart
    # the saved model keeps the tokens, and generation is conditioned on the positive one
    saved = load_policy(str(tmp_path / "model"))
    assert saved.tokenizer.convert_tokens_to_ids(["<reward_0>", "<reward_1>"]) == [POS, NEG]
    responses = agent.respond(OBS)
    prompts = ["<reward_0>" + format_prompt(o["instruction"], o["input"]) for o in OBS]
    by_hand = agent.policy.generate(prompts, max_new_tokens=6, temperature=0.7, top_p=1.0, batch_size=4,
                                    seed=stable_hash(agent.name, agent.seed, *prompts))
    assert responses == [g[0].strip() for g in by_hand]
    # a rerun loads the trained model (tokens included) on a fresh policy
    again = make_agent("binary_reward_conditioning", config=TINY_SFT, **GEN)
    again.fit({}, policy=load_policy("tiny-llama"), preferences=rows, output_dir=str(tmp_path))
    assert sft_loss(again.policy, pairs) == pytest.approx(after, rel=1e-5)
    assert again.respond(OBS) == responses


@pytest.mark.slow
def test_dpo_lowers_its_loss_against_a_frozen_copy(tmp_path):
    rows = synthetic_rows()
    policy = load_policy("tiny-llama")
    reference = Policy(copy.deepcopy(policy.model), policy.tokenizer, name="ref")
    start = implicit_rewards(policy, reference, dpo_rows(rows), beta=0.1)
    assert start["loss"] == pytest.approx(math.log(2)) and max(map(abs, start["margins"])) < 1e-6
    agent = make_agent("dpo", config=TINY_DPO, **GEN)
    agent.fit({}, policy=policy, preferences=rows, output_dir=str(tmp_path))
    end = implicit_rewards(agent.policy, reference, dpo_rows(rows), beta=0.1)
    assert end["loss"] < math.log(2) - 0.05, end["loss"]
    assert end["mean_margin"] > 0.1 and end["accuracy"] == 1.0
    s = agent.summary
    assert s["pairs"] == 16 and s["steps"] == 5
    assert s["first_loss"] == pytest.approx(math.log(2), abs=1e-4) and s["last_loss"] < s["first_loss"]
    assert s["last_margin"] > 0.1  # TRL's margin against its reference: a reference that moved with the policy gives 0
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 6  # header + one line per step
    assert not (tmp_path / "trainer").exists()  # checkpoints go once the model is saved
    assert end["mean_margin"] > s["last_margin"]  # TRL logs the margin before its last update; ours is after it
    responses = agent.respond(OBS)
    assert len(responses) == 2 and all(isinstance(r, str) for r in responses)
    again = make_agent("dpo", config=TINY_DPO, **GEN)
    again.fit({}, policy=load_policy("tiny-llama"), preferences=rows, output_dir=str(tmp_path))
    assert implicit_rewards(again.policy, reference, dpo_rows(rows))["loss"] == pytest.approx(end["loss"], rel=1e-5)
    assert again.respond(OBS) == responses
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["beta"] == 0.1
