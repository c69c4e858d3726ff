"""The reward-model stage: ``train_reward_model`` on collected rows, the reference's held-out split (random_split,
seed 42), held-out accuracy in ``summary.json``, draws skipped, caching by output_dir (other inputs refused), resume from a
checkpoint."""
from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import TrainerCallback

from alpaca_farm_env.data import format_prompt
from alpaca_farm_env.rewards import make_reward
from alpaca_farm_env.rewards import reward_model as rm

KEYWORD = "excellent"
WORDS = "the a cat dog runs fast slow red blue house tree river moon sun light dark small big".split()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def keyword_rows(n: int, seed: int = 0) -> list[dict]:
    """Synthetic preferences: the output that contains KEYWORD (anywhere) wins; the winner's slot alternates."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = [rng.choice(WORDS) for _ in range(6)]
        good.insert(rng.randrange(7), KEYWORD)
        good, bad = " ".join(good), " ".join(rng.choice(WORDS) for _ in range(6))
        pref = 1 + i % 2
        rows.append(dict(instruction=f"Write sentence {i}.", input="", output_1=good if pref == 1 else bad,
                         output_2=bad if pref == 1 else good, preference=pref, annotator="synthetic"))
    return rows


@pytest.mark.slow
def test_minilm_reward_model_learns_the_keyword_preference_on_held_out_pairs(tmp_path):
    """The MiniLM encoder backbone (the tiny preset's; ~8 s of training here) ranks held-out pairs > 90% right."""
    rows = keyword_rows(96)
    draws = [dict(instruction="Tie.", input="", output_1="x", output_2="y", preference=1.5),
             dict(instruction="Same.", input="", output_1="z", output_2="z", preference=1)]
    out = rm.train_reward_model(rows + draws, rm.MINILM, tmp_path / "rm", n_eval=32, learning_rate=5e-4,
                                num_train_epochs=1, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                                progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == rm.reward_model_summary(out)
    assert summary["n_eval"] == 32 and summary["n_train"] == 64 and summary["n_skipped"] == 2
    assert summary["eval_accuracy"] > 0.9
    assert summary["backbone"].startswith("minilm:")

    # the held-out pairs are the reference's random_split(seed 42); the saved model, scored through the reward
    # backend as best-of-n / PPO use it, gives the same accuracy on them
    _, held = rm.held_out_split(96, 32, 42)
    held_rows = [rows[i] for i in held]
    backend = make_reward("reward_model", **rm.reward_model_spec(out)["reward_kwargs"])
    prompts = [format_prompt(r["instruction"]) for r in held_rows]
    good = [r["output_1"] if r["preference"] == 1 else r["output_2"] for r in held_rows]
    bad = [r["output_2"] if r["preference"] == 1 else r["output_1"] for r in held_rows]
    wins = [g > b for g, b in zip(backend.score(prompts, good), backend.score(prompts, bad))]
    assert sum(wins) / 32 == pytest.approx(summary["eval_accuracy"])
    assert all(KEYWORD in g and KEYWORD not in b for g, b in zip(good, bad))

    # before training (pretrained encoder, fresh head) the same held-out pairs are near chance
    model, tok, _ = rm._load_backbone(rm.MINILM, tmp_path / "untrained", seed=42)
    ids = rm._preference_rows(held_rows, tok, 512)
    assert rm.held_out_accuracy(model, ids, tok.pad_token_id) < 0.8


def test_held_out_split_is_the_references_random_split():
    train, held = rm.held_out_split(20, 5, seed=42)
    ref_train, ref_held = torch.utils.data.random_split(range(20), [15, 5], generator=torch.Generator().manual_seed(42))
    assert (train, held) == (list(ref_train.indices), list(ref_held.indices))
    assert sorted(train + held) == list(range(20)) and held != list(range(15, 20))
    assert rm.held_out_split(20, 5, seed=42) == (train, held) and rm.held_out_split(20, 5, seed=0) != (train, held)
    assert rm.held_out_split(7, 0) == (list(range(7)), [])
    with pytest.raises(ValueError, match="n_eval=500"):
        rm.held_out_split(100, 500)
    assert rm.RewardModelTrainingConfig().n_eval == 500 and rm.RewardModelTrainingConfig().seed == 42


def test_cached_by_output_dir_and_other_inputs_refused(tmp_path):
    kw = dict(n_eval=4, learning_rate=1e-3, per_device_train_batch_size=4, gradient_accumulation_steps=1,
              progress=False)
    rows = keyword_rows(16)
    out = rm.train_reward_model(rows, "tiny-llama", tmp_path / "rm", **kw)
    first = rm.reward_model_summary(out)
    weights = (out / "model.safetensors").stat()
    assert rm.train_reward_model(rows, "tiny-llama", tmp_path / "rm", **kw) == out  # same inputs: cached
    assert (out / "model.safetensors").stat().st_mtime_ns == weights.st_mtime_ns
    assert rm.reward_model_summary(out) == first and not (tmp_path / "rm.work").exists()
    with pytest.raises(ValueError, match="fresh output_dir"):  # other data: never reused nor overwritten
        rm.train_reward_model(keyword_rows(16, seed=1), "tiny-llama", tmp_path / "rm", **kw)
    with pytest.raises(ValueError, match="fresh output_dir"):  # another config
        rm.train_reward_model(rows, "tiny-llama", tmp_path / "rm", **{**kw, "learning_rate": 2e-3})
    assert rm.reward_model_summary(out) == first


class _Kill(TrainerCallback):
    """Stops the process's training at a given step, as a kill would (after the step-2 checkpoint was written)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt("killed")


@pytest.mark.slow
def test_resumes_from_the_last_checkpoint(tmp_path):
    kw = dict(n_eval=4, learning_rate=1e-3, per_device_train_batch_size=4, gradient_accumulation_steps=1,
              save_steps=2, progress=False)
    rows = keyword_rows(24)  # 20 train pairs, batch 4: 5 steps
    with pytest.raises(KeyboardInterrupt):
        rm.train_reward_model(rows, "tiny-llama", tmp_path / "rm", callbacks=[_Kill()], **kw)
    assert not (tmp_path / "rm").exists()
    assert [p.name for p in (tmp_path / "rm.work" / "trainer").glob("checkpoint-*")] == ["checkpoint-2"]
    out = rm.train_reward_model(rows, "tiny-llama", tmp_path / "rm", **kw)
    summary = rm.reward_model_summary(out)
    assert summary["resumed_from"] == "checkpoint-2" and summary["n_train"] == 20
    assert not (tmp_path / "rm.work").exists()
