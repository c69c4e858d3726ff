"""Behaviour behind the issue-12 performance work (nothing here times anything):

* ``import alpaca_farm_env`` does not import torch (the agents and rewards load on first use of their names);
* the judge's answer bank is built only when a prompt inside it is scored: a training-split step never builds it,
  and the lazy bank gives the same judgments as the eager one on banked prompts.
"""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_import_does_not_import_torch_and_lazy_names_still_work():
    code = ("import sys, alpaca_farm_env as a; heavy = [m for m in ('torch', 'transformers', 'sklearn', 'scipy') "
            "if m in sys.modules]; print(heavy); assert not heavy, heavy; "
            "assert 'annotator' in a.list_rewards() and 'sft' in a.list_agents(); "
            "assert callable(a.make_reward) and callable(a.make_agent) and a.rewards.REWARDS")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_bank_answers_membership_without_building(data_dir):
    from alpaca_farm_env.data import load_eval_set, load_split
    from alpaca_farm_env.judge.answer_bank import AnswerBank
    from alpaca_farm_env.judge.bank_heads import LazyAnswerBank
    from alpaca_farm_env.judge.training_data import load_training_pairs

    rows = load_training_pairs(data_dir, max_pairs_per_model=40)
    lazy = LazyAnswerBank(rows)
    eager = AnswerBank(rows)
    assert isinstance(lazy, AnswerBank) and len(lazy) == len(eager) and bool(lazy)
    ev = load_eval_set("alpacafarm", data_dir)[0]
    assert lazy.has(ev["instruction"], ev["input"]) == eager.has(ev["instruction"], ev["input"])
    for r in load_split("unlabeled", data_dir)[:50]:
        assert not lazy.has(r["instruction"], r["input"])
    assert not lazy.built
    q = ([ev["instruction"]] * 2, [ev["input"]] * 2, ["Paris is the capital.", "I do not know."])
    assert lazy.key == eager.key and lazy.built
    assert (lazy.features(lazy.query(*q)) == eager.features(eager.query(*q))).all()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_training_split_step_never_builds_the_bank(data_dir):
    import gymnasium as gym

    import alpaca_farm_env  # noqa: F401
    from alpaca_farm_env.envs.source import clear_reward_cache
    from alpaca_farm_env.judge import bank_heads

    clear_reward_cache()
    bank_heads._BANKS.clear()
    env = gym.make("AlpacaFarm-v0", split="unlabeled", data_dir=str(data_dir), seed=0, max_examples=4)
    env.reset(seed=0)
    _, reward, *_ = env.step("A short answer.")
    assert 0.0 <= reward <= 1.0
    banks = list(bank_heads._BANKS.values())
    assert banks and all(isinstance(b, bank_heads.LazyAnswerBank) and not b.built for b in banks)
    env.close()
    clear_reward_cache()


def test_minilm_matches_transformers():
    """The judge's own encoder forward gives AutoModel's mean-pooled, normalised embeddings, and the same word pieces."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from alpaca_farm_env.judge.features import encoder_path
    from alpaca_farm_env.judge.minilm import MiniLM

    texts = ["Paris.", "Sure! Here are three primary colors: red, blue and yellow. " * 12, "I'm sorry, as an AI I can't",
             "", "Ünïcödé — dashes… and 🙂", "line one\n\n  line\ttwo"]
    ours = MiniLM(encoder_path())
    tok = AutoTokenizer.from_pretrained(str(encoder_path()))
    model = AutoModel.from_pretrained(str(encoder_path())).eval()
    for max_tokens in (32, 128):
        enc = tok(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        ids, mask = ours.tokenize(texts, max_tokens)
        assert np.array_equal(ids, enc["input_ids"].numpy()) and np.array_equal(mask, enc["attention_mask"].numpy())
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        ref = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()
        got = ours.embed(texts, max_tokens)
        assert got.dtype == np.float32 and got.shape == (len(texts), 384)
        assert np.abs(got - ref).max() < 1e-5


@pytest.mark.slow
def test_a_judged_training_step_does_not_import_transformers(data_dir, tmp_path):
    """The first step of the default env (annotator reward, distilled judge, an output it has never embedded) does
    not import transformers: its BERT module costs ~2.5 s to import on 2 CPU cores (issue 12, P3)."""
    code = (
        "import sys, uuid, gymnasium as gym, alpaca_farm_env\n"
        f"env = gym.make('AlpacaFarm-v0', split='unlabeled', data_dir={str(data_dir)!r}, seed=0, max_examples=8)\n"
        "env.reset(seed=0)\n"
        "for _ in range(20):\n"
        "    _, r, _, _, info = env.step('A short answer. ' + uuid.uuid4().hex)\n"
        "    if not info.get('is_noisy_label'):\n"
        "        break\n"
        "    env.reset()\n"
        "assert not info.get('is_noisy_label') and 0.0 <= r <= 1.0, info\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] == 'transformers']\n"
        "assert not heavy, heavy\n"
    )
    import os

    from alpaca_farm_env.models import smollm2_folder

    # The judge's coherence gate reads outputs with SmolLM2 (judge/smollm.py, plain torch). Its float32 folder is
    # converted from the packaged GGUF once per machine (~30 s, with transformers); every step after that loads the
    # folder without transformers. The fresh cache here gets that folder, and nothing else.
    folder = smollm2_folder()
    (tmp_path / "cache" / "models").mkdir(parents=True)
    (tmp_path / "cache" / "models" / folder.name).symlink_to(folder, target_is_directory=True)
    env = {**os.environ, "ALPACA_FARM_CACHE": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
