"""The junk fuzzer (judge/fuzz.py) and the coherence gate (judge/coherence.py) in front of the judge's preference.

Real data, the packaged judge, no mocks. The property-based test draws batches of junk from the fuzzer's families
with Hypothesis and asserts that the noise-free pool and each member almost never (at most 3 times in 24) prefer it
to the reference; it covers the families the gate closes today (``GATED_KINDS``), and docs/judge.md gives the
measured table of every family.
"""
from __future__ import annotations

import os

import numpy as np
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alpaca_farm_env.annotators import make_annotator
from alpaca_farm_env.judge import coherence, training_data
from alpaca_farm_env.judge.degenerate import select_prompts
from alpaca_farm_env.judge.fuzz import (ALPHABETS, FUZZ_KINDS, HELD_IN_KINDS, HELD_OUT_KINDS, build_fuzz,
                                        fuzz_response, other_reference, random_chars)

# the families the gate closes on both splits (>= 97% losses, docs/judge.md); the others are measured there
GATED_KINDS = ("random_chars", "prompt_echo", "repetition", "markdown_skeleton")


@pytest.fixture(scope="module")
def rows(data_dir):
    return select_prompts("unlabeled", 24, data_dir)


@pytest.fixture(scope="module")
def pooled(data_dir):
    return make_annotator("pooled", data_dir=data_dir)


def test_families_are_parameterised_deterministic_and_seeded(rows):
    import random

    assert set(HELD_IN_KINDS) | set(HELD_OUT_KINDS) == set(FUZZ_KINDS) and not set(HELD_IN_KINDS) & set(HELD_OUT_KINDS)
    suite = build_fuzz(rows, draws=2)
    assert suite == build_fuzz(rows, draws=2)
    assert {s["kind"] for s in suite} == set(FUZZ_KINDS)
    assert all(s["response"].strip() != s["reference_output"].strip() for s in suite)
    # draws differ: the parameters come from (kind, prompt, draw)
    a = [s["response"] for s in suite if s["draw"] == 0 and s["kind"] == "random_chars"]
    b = [s["response"] for s in suite if s["draw"] == 1 and s["kind"] == "random_chars"]
    assert sum(x != y for x, y in zip(a, b)) == len(a)
    # lengths from 1 to 2,000 characters, every alphabet reachable
    lengths = [len(random_chars(random.Random(i))) for i in range(400)]
    assert min(lengths) <= 3 and max(lengths) >= 1000 and max(lengths) <= 2000
    assert len(random_chars(random.Random(0), 7, "cyrillic")) == 7 and len(ALPHABETS) >= 8
    # the off-topic family answers another prompt
    assert all(other_reference(rows, i) != r["reference_output"] for i, r in enumerate(rows))


def test_fuzz_is_the_same_in_another_process(rows, data_dir):
    code = ("import json, sys; from alpaca_farm_env.judge.fuzz import build_fuzz; "
            "from alpaca_farm_env.judge.degenerate import select_prompts; "
            "print(json.dumps([s['response'] for s in build_fuzz(select_prompts('unlabeled', 24, sys.argv[1]))]))")
    env = dict(os.environ, PYTHONHASHSEED="4321")
    out = subprocess.run([sys.executable, "-c", code, str(data_dir)], capture_output=True, text=True, env=env,
                         check=True).stdout
    import json

    assert json.loads(out) == [s["response"] for s in build_fuzz(rows)]


@pytest.mark.slow
def test_no_fuzz_response_is_a_training_negative(rows, data_dir):
    """The fuzzer's junk is not among the synthetic negatives the judge's heads were trained on."""
    from alpaca_farm_env.judge.config import JudgeConfig

    train_rows, _ = training_data.with_synthetic(training_data.load_training_pairs(data_dir), JudgeConfig())
    train = {t for r in train_rows for t in (r["output_1"], r["output_2"])}
    assert not {s["response"] for s in build_fuzz(rows)} & train


def test_gate_fires_on_junk_and_not_on_real_answers(rows):
    prompts = [r["instruction"] + ("\n\n" + r["input"] if r["input"] else "") for r in rows]
    refs = [r["reference_output"] for r in rows]
    real = coherence.junk_scores(prompts, refs)
    assert (real < 0.5).mean() >= 0.95, [coherence.explain(p, o) for p, o in zip(prompts, refs)]
    for kind in ("random_chars", "repetition", "markdown_skeleton"):
        pairs = [(p, fuzz_response(kind, r["instruction"], r["input"], r["reference_output"], "", d))
                 for d in range(3) for p, r in zip(prompts, rows)]
        pairs = [(p, j) for p, j in pairs if len(j.strip()) >= 20]  # (a few characters are the heads' to judge)
        gated = coherence.junk_scores([p for p, _ in pairs], [j for _, j in pairs]) >= 0.5
        assert len(pairs) >= 30 and gated.mean() >= 0.85, (kind, gated.mean())
    assert coherence.explain("Name a fruit.", "") == {"empty": 1.0}
    assert "echo" in coherence.explain("Name a fruit.", "Name a fruit.")


def test_gate_keeps_the_order_symmetry(rows, pooled):
    r = rows[0]
    junk = fuzz_response("random_chars", r["instruction"], r["input"], r["reference_output"], "", 0)
    member = next(iter(pooled.members.values()))
    a = member.compare([r["instruction"]], [r["input"]], [r["reference_output"]], [junk])[0]
    b = member.compare([r["instruction"]], [r["input"]], [junk], [r["reference_output"]])[0]
    assert a.probability == pytest.approx(1.0 - b.probability, abs=1e-12)
    assert a.preference == 1.0 and b.preference == 2.0


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@pytest.mark.slow
@given(kind=st.sampled_from(GATED_KINDS), batch=st.integers(0, 10_000))
def test_junk_almost_never_beats_the_reference(rows, pooled, kind, batch):
    """Property: a batch of 24 junk responses of a gated family, one per prompt, with parameters drawn from the
    batch number, loses to the reference at least 21 times in 24 (the target is 97%; a search over single draws
    would find the few percent that win, so the property is about rates) under the noise-free pool and under every
    member on its own."""
    junk = [fuzz_response(kind, r["instruction"], r["input"], r["reference_output"], other_reference(rows, i),
                          batch * 100 + i) for i, r in enumerate(rows)]
    keep = [i for i, j in enumerate(junk) if j.strip() != rows[i]["reference_output"].strip()]
    args = ([rows[i]["instruction"] for i in keep], [rows[i]["input"] for i in keep],
            [rows[i]["reference_output"] for i in keep], [junk[i] for i in keep])
    for judge in [pooled, *pooled.members.values()]:
        prefs = [a.preference for a in judge.compare(*args)]
        won = [junk[keep[k]][:80] for k, p in enumerate(prefs) if p != 1.0]
        assert len(won) <= 3, (kind, getattr(judge, "name", ""), won)


@pytest.mark.slow
def test_smollm_forward_matches_transformers():
    """The gate's plain-torch SmolLM2 forward gives transformers' log-probabilities on the same folder."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from alpaca_farm_env.judge.smollm import SmolLM
    from alpaca_farm_env.models import smollm2_folder

    folder = smollm2_folder()
    ours = SmolLM(folder)
    ids = ours.encode(["The capital of France is Paris.", "xq zv ## wk, the of and", "1. Preheat the oven to 180 C."])
    x = np.full((len(ids), 1 + max(map(len, ids))), ours.pad_id, np.int64)
    for r, row in enumerate(ids):
        x[r, 0] = ours.bos_id
        x[r, 1: 1 + len(row)] = row
    got = ours.token_logprobs(x)
    ref = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.inference_mode():
        want = torch.log_softmax(ref(torch.as_tensor(x)).logits[:, :-1], -1).gather(2, torch.as_tensor(x)[:, 1:, None])[..., 0]
    for r, row in enumerate(ids):  # real tokens only (right padding)
        assert torch.allclose(got[r, : len(row)], want[r, : len(row)], atol=1e-4), r


@pytest.mark.slow
def test_lm_evidence_reads_word_order(tmp_path, monkeypatch):
    """Prose scores well above its own words shuffled; the scores are cached by text."""
    from alpaca_farm_env.judge.lm_evidence import LMEvidence, lm_junk, shuffled_words

    monkeypatch.setenv("ALPACA_FARM_CACHE", str(tmp_path))
    prose = ("To make a cup of tea, boil fresh water, pour it over the tea bag in a warm cup, and let it steep for "
             "three to five minutes before adding milk.")
    lm = LMEvidence()
    s = lm.scores([prose, shuffled_words(prose), "Too short."])
    assert s[0, 0] > s[1, 0] + 1.0  # word order is worth more than a nat a token to a real LM
    assert np.isnan(s[2]).all()  # fewer than MIN_WORDS words: not asked
    j = lm_junk(s)
    assert j[0] == 0.0 and j[1] > 0.5 and j[2] == 0.0
    n = lm.n_scored
    again = LMEvidence().scores([prose])  # another instance: from the on-disk cache
    assert np.array_equal(again[0], s[0], equal_nan=True) and n == 2
