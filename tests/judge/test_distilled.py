"""The offline distilled GPT-4 judge: trains (small version), loads from cache, is order-symmetric, and pools.

Real components throughout: the packaged all-MiniLM-L6-v2 encoder, the real AlpacaEval-1 GPT-4 annotation files of
the data dir, the real AnnotatorPool. The cache lives in a temporary directory, so the first build really trains.
"""
from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest

from alpaca_farm_env.annotators.pool import AnnotatorPool
from alpaca_farm_env.judge import bank_heads, features, files, heads, training_data
from alpaca_farm_env.judge.config import JudgeConfig
from alpaca_farm_env.judge.features import N_FEATURES, MiniLMEncoder
from alpaca_farm_env.judge.global_features import N_COMPACT_FEATURES
from alpaca_farm_env.judge.judge import DistilledJudge, NoisyPooledJudge, PooledJudge

MODELS = ("falcon-40b-instruct", "gpt4", "phi-2")  # weak, strong and mid GPT-4 win-rates
N_PAIRS = 40


@pytest.fixture(scope="module")
def small(tmp_path_factory, data_dir):
    cache = tmp_path_factory.mktemp("judge_cache")
    old = os.environ.get("ALPACA_FARM_CACHE")
    os.environ["ALPACA_FARM_CACHE"] = str(cache)
    try:
        config = JudgeConfig(models=MODELS, max_pairs_per_model=N_PAIRS, n_bootstrap=3)
        rows = training_data.load_training_pairs(data_dir, MODELS, N_PAIRS)
        yield config, rows, cache
    finally:
        if old is None:
            os.environ.pop("ALPACA_FARM_CACHE", None)
        else:
            os.environ["ALPACA_FARM_CACHE"] = old


@pytest.fixture(scope="module")
def built(small, data_dir):
    config, rows, cache = small
    before = files.BUILD_COUNT
    art, path = heads.get_artifact(config, data_dir, progress=False)
    assert files.BUILD_COUNT == before + 1, "first use must train"
    return config, rows, art, path


def test_trains_then_loads_from_cache(built, data_dir):
    config, rows, art, path = built
    assert path.is_file() and str(path).startswith(os.environ["ALPACA_FARM_CACHE"])
    assert art.heads.shape == (1 + config.n_bootstrap, N_COMPACT_FEATURES)  # the default global head
    assert art.meta["n_pairs"] == len(rows) and len(MODELS) * N_PAIRS - 3 <= len(rows) <= len(MODELS) * N_PAIRS
    assert art.meta["models"] == sorted(MODELS)
    # bootstrap heads differ from the full-data head (different data subsets)
    assert not np.allclose(art.heads[0], art.heads[1])
    mtime, count = path.stat().st_mtime_ns, files.BUILD_COUNT
    art2, path2 = heads.get_artifact(config, data_dir, progress=False)
    assert path2 == path and path.stat().st_mtime_ns == mtime and files.BUILD_COUNT == count, "second use retrained"
    np.testing.assert_array_equal(art2.heads, art.heads)
    # embeddings are cached by text digest: a fresh encoder recomputes nothing for the same texts
    enc = MiniLMEncoder(max_tokens=config.max_tokens)
    heads.pair_features(enc, rows[:5])
    assert enc.n_encoded == 0


@pytest.mark.slow
def test_judge_fits_gpt4_labels_better_than_chance(built):
    config, rows, art, _ = built
    judge = DistilledJudge(config=config, artifact=art)
    anns = judge.compare([r["instruction"] for r in rows], [r["input"] for r in rows],
                         [r["output_1"] for r in rows], [r["output_2"] for r in rows])
    gold = [r["preference"] for r in rows]
    hits = [a.preference == g for a, g in zip(anns, gold) if g in (1.0, 2.0)]
    assert np.mean(hits) > 0.7  # in-sample, but a head that learned nothing sits near the base rate of one label
    assert {1.0, 2.0} <= {a.preference for a in anns}  # it does not answer one side for everything
    assert all(a.annotator == "distilled_gpt4" and a.cost == 0.0 for a in anns)


def test_order_symmetry(built):
    config, rows, art, _ = built
    judge = DistilledJudge(config=config, artifact=art, head=2)
    sub = rows[:12]
    ins, inp = [r["instruction"] for r in sub], [r["input"] for r in sub]
    o1, o2 = [r["output_1"] for r in sub], [r["output_2"] for r in sub]
    ab = judge.compare(ins, inp, o1, o2)
    ba = judge.compare(ins, inp, o2, o1)
    for x, y in zip(ab, ba):
        assert x.probability == pytest.approx(1.0 - y.probability, abs=1e-9)
        assert x.preference == 3.0 - y.preference
    same = judge.compare(ins[:2], inp[:2], o1[:2], o1[:2])
    assert [a.preference for a in same] == [1.5, 1.5] and [a.probability for a in same] == [0.5, 0.5]
    # annotate(rows) is compare() on the presented order
    assert [a.probability for a in judge.annotate(sub)] == [a.probability for a in ab]


@pytest.mark.slow
def test_pooled_and_noisy_pooled_semantics(built, data_dir):
    config, rows, art, _ = built
    pooled = PooledJudge(config=config, data_dir=data_dir)
    noisy = NoisyPooledJudge(config=config, data_dir=data_dir)
    assert isinstance(pooled, AnnotatorPool) and isinstance(noisy, AnnotatorPool)
    assert pooled.p_label_flip is None and noisy.p_label_flip == 0.25
    assert len(pooled.members) == config.n_bootstrap and pooled.is_randomize_output_order
    cols = ([r["instruction"] for r in rows], [r["input"] for r in rows],
            [r["output_1"] for r in rows], [r["output_2"] for r in rows])
    clean = pooled.compare(*cols, seed=0)
    # noise-free pool == the assigned member's own judgment (the swap is undone exactly, by symmetry)
    for r, a in zip(rows, clean):
        member = pooled.members[pooled.assign_member(r["instruction"], r["input"], 0)]
        direct = member.compare([r["instruction"]], [r["input"]], [r["output_1"]], [r["output_2"]])[0]
        assert a.annotator == member.name and a.preference == direct.preference
        assert a.probability == pytest.approx(direct.probability, abs=1e-9)
    assert not any(a.is_noisy_label for a in clean)
    uniq = len({(r["instruction"], r["input"], r["output_1"], r["output_2"]) for r in rows})
    same = sum(r["output_1"] == r["output_2"] for r in rows)  # identical outputs: a draw, never queried
    assert pooled.last_stats["queried"] == uniq - same and pooled.last_stats.get("same_outputs", 0) == same
    assert sum(Counter(a.annotator for a in clean).values()) == len(rows)
    assert len(set(a.annotator for a in clean)) >= 2  # members are used, keyed per example
    nz = noisy.compare(*cols, seed=0)
    n_noisy = sum(a.is_noisy_label for a in nz)
    assert noisy.last_stats["noisy"] == n_noisy and noisy.last_stats["queried"] == uniq - same - n_noisy
    assert 0.3 < n_noisy / len(rows) < 0.7  # p_label_flip=0.25 replaces about half the labels by a coin
    for a, c in zip(nz, clean):
        if not a.is_noisy_label:
            assert a.preference == c.preference  # noise never touches the labels it keeps


@pytest.mark.slow
def test_cli_judge_eval_small_subset(built, data_dir, capsys):
    from alpaca_farm_env.cli import main

    rc = main(["judge", "eval", "--data-dir", str(data_dir), "--models", *MODELS, "--max-pairs", str(N_PAIRS), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert sorted(res["models"]) == sorted(MODELS) and res["n_pairs"] == len(built[1])
    # the "longer wins" column is exactly the `longer` annotator on the same pairs
    from alpaca_farm_env.annotators.heuristics import LongerWinsAnnotator
    from alpaca_farm_env.metrics import win_rate

    for m in MODELS:
        sub = [r for r in built[1] if r["model"] == m]
        anns = LongerWinsAnnotator().compare([r["instruction"] for r in sub], [r["input"] for r in sub],
                                             [r["output_1"] for r in sub], [r["output_2"] for r in sub])
        assert res["per_model"][m]["longer_win_rate"] == pytest.approx(win_rate([a.preference for a in anns])["win_rate"])
        assert res["per_model"][m]["gpt4_win_rate"] == pytest.approx(win_rate([r["preference"] for r in sub])["win_rate"])
        assert 0.0 <= res["per_model"][m]["judge_agreement"] <= 1.0
    s = res["summary"]
    assert res["heads"] == ["bank", "global"]
    for key in ("judge", "bank", "global", "longer"):
        assert {"agreement", "agreement_mid", "mae", "spearman", "mae_calibrated"} <= set(s[key])
    assert s["judge"] == s["bank"]  # the judge scores these (eval) instructions with its bank heads
    for m, v in res["per_model"].items():
        assert (m in res["mid_range_models"]) == (20.0 <= v["gpt4_win_rate"] <= 60.0)


def test_cli_annotators_analyze_longer(data_dir, capsys):
    from alpaca_farm_env.cli import main

    rc = main(["annotators", "analyze", "--annotator", "longer", "--data-dir", str(data_dir), "--models", *MODELS,
               "--max-pairs", "60", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_pairs"] == 60
    assert res["prefer_longer"] == 1.0 and res["self_consistency_seeds_0_1"] == 1.0  # by construction of `longer`
    assert 0.3 < res["agreement_with_gpt4"] < 1.0 and res["cost_per_1000"] == 0.0
    assert 0.3 < res["gpt4_prefer_longer"] < 1.0


def test_packaged_artifact_is_small_and_loads():
    path = heads.packaged_artifact(JudgeConfig())
    if path is None:
        pytest.fail("no packaged artifact for the default config: run `alpaca-farm judge train` and copy it "
                    "to alpaca_farm_env/artifacts/ (see its README)")
    total = sum(p.stat().st_size for p in files.PACKAGED_ARTIFACTS.iterdir() if p.is_file())
    assert total < 1_000_000
    art = heads.JudgeArtifact.load(path)
    assert art.heads.shape[1] == N_COMPACT_FEATURES and art.heads.shape[0] >= 2
    full = heads.packaged_artifact(JudgeConfig(global_features="full"))  # the previous head still ships
    assert full is not None and heads.JudgeArtifact.load(full).heads.shape[1] == N_FEATURES
    assert len(art.meta["models"]) >= 10 and art.meta["n_pairs"] > 10_000


@pytest.mark.slow
def test_packaged_bank_heads_match_the_data_dirs_bank(data_dir):
    """The shipped bank heads are keyed by the data dir's annotation files: they must be the ones this data dir's bank
    uses (a change to the bank features or the data makes this fail until they are rebuilt; see artifacts/README.md)."""
    from alpaca_farm_env.judge.answer_bank import BANK_FEATURES

    bank = bank_heads.load_bank(data_dir)
    from alpaca_farm_env.judge.config import data_fingerprint

    shipped = files.PACKAGED_ARTIFACTS / bank_heads.bank_artifact_path(JudgeConfig(), data_fingerprint(data_dir)).name
    assert shipped.is_file(), "rebuild: alpaca-farm judge train --force, then copy distilled_bank_<key>.npz"
    art = bank_heads.BankArtifact.load(shipped)
    assert art.meta["features"] == list(features.HAND_FEATURES) + list(BANK_FEATURES)
    assert art.heads.W1.shape == (1 + JudgeConfig().n_bootstrap, JudgeConfig().bank_hidden, len(art.meta["features"]))
    assert art.meta["bank"] == bank.key and art.meta["n_pairs"] > 10_000


def test_synthetic_negatives_are_deterministic_per_model_and_label_the_reference(built):
    config, rows, _, _ = built
    syn = training_data.synthetic_negatives(rows, 0.5, seed=0)
    assert syn == training_data.synthetic_negatives(rows, 0.5, seed=0)  # stable hashes, no global RNG
    assert 0.3 * len(rows) < len(syn) < 0.7 * len(rows)
    assert {r["synthetic"] for r in syn} == set(training_data.SYNTHETIC_KINDS)
    real = {(r["model"], r["instruction"], r["input"]): r for r in rows}
    outputs_of = {}
    for r in rows:
        outputs_of.setdefault(r["model"], set()).add(r["output_2"])
    for s in syn:
        src = real[(s["model"], s["instruction"], s["input"])]
        assert s["preference"] == 1.0 and s["output_1"] == src["output_1"] and s["output_2"] != src["output_2"]
        if s["synthetic"] == "mismatched":  # another instruction's answer by the same model (a LOMO fold drops both)
            assert s["output_2"] in outputs_of[s["model"]]
        if s["synthetic"] == "template_echo":
            assert "### Instruction:" in s["output_2"]
    rows2, w = training_data.with_synthetic(rows, config)
    assert len(rows2) == len(rows) + len(syn) and w[: len(rows)].tolist() == [1.0] * len(rows)
    assert np.all(w[len(rows):] == config.augment_weight)


@pytest.mark.slow
def test_packaged_judge_ranks_degenerate_outputs_below_the_reference(data_dir, tmp_path, monkeypatch):
    """Degenerate versions of a held-out model's answers (vicuna-7b has no GPT-4 annotations, so the packaged head
    never saw its outputs) lose to the davinci003 reference, and score below the model's own answer."""
    monkeypatch.setenv("ALPACA_FARM_CACHE", str(tmp_path))  # the packaged artifact, not a user's cached one
    from alpaca_farm_env.benchmark.evaluation import match_outputs
    from alpaca_farm_env.data import load_eval_set, load_model_outputs

    pairs = match_outputs(load_model_outputs("vicuna-7b", data_dir), load_eval_set("alpacaeval1", data_dir)).pairs
    pairs = [p for p in pairs if len(p["output_2"].split()) >= 40][:60:3]  # 20 answers long enough to degrade
    judge = DistilledJudge()
    n = len(pairs)
    rows = [dict(p, model="vicuna-7b") for p in pairs]
    for kind in training_data.SYNTHETIC_KINDS:
        bad = [training_data.degenerate_output(kind, r, rows[(i + 7) % n], f"test|{i}") for i, r in enumerate(rows)]
        ins, inp = [p["instruction"] for p in pairs], [p["input"] for p in pairs]
        vs_ref = judge.compare(ins, inp, [p["output_1"] for p in pairs], bad)
        vs_own = judge.compare(ins, inp, [p["output_2"] for p in pairs], bad)
        # the model's own answer always beats its off-topic / cut-off / looping / template-echoing version ...
        assert np.mean([a.preference == 1.0 for a in vs_own]) >= 0.9, kind
        # ... and looping, template echoes and (near-)empty answers lose to the reference. A long off-topic or cut-off
        # vicuna answer still beats the shorter reference in some pairs (measured 60% / 75% losses: docs/judge.md)
        if kind in ("repetitive", "template_echo", "near_empty"):
            assert np.mean([a.preference == 1.0 for a in vs_ref]) >= 0.9, kind
        else:
            assert np.mean([a.preference == 1.0 for a in vs_ref]) >= 0.5, kind


# ----------------------------------------------------------------------------------------------- best variant
@pytest.mark.slow
def test_best_variant_trains_resumes_loads_from_cache_and_is_order_symmetric(small, data_dir):
    """The fine-tuned cross-encoder: a few steps on 12 pairs at 32 word pieces (real MiniLM, real GPT-4 labels)."""
    from alpaca_farm_env.judge import cross_encoder as CE
    from alpaca_farm_env.annotators.base import make_annotator

    _, _, cache = small
    rows = training_data.load_training_pairs(data_dir, MODELS, 4)
    cfg = CE.CrossEncoderConfig(models=MODELS, max_pairs_per_model=4, max_length=32, batch_pairs=4, max_steps=3,
                                n_pool_pairs=8, n_bootstrap=2, warmup_steps=1)
    folder = CE.artifact_dir(cfg)
    assert str(folder).startswith(str(cache))
    # a run killed after 2 steps leaves a checkpoint and no artifact
    CE.train_best(cfg, data_dir, rows=rows, stop_after_steps=2, checkpoint_every=100, progress=False)
    assert (folder / "checkpoint.pt").is_file() and not (folder / "model.pt").exists()
    # first use resumes from it and finishes the remaining step
    before = CE.BEST_BUILD_COUNT
    model = CE.get_best_model(cfg, data_dir, progress=False, rows=rows)
    assert CE.BEST_BUILD_COUNT == before + 1
    assert model.meta["resumed_from_step"] == 2 and model.meta["steps"] == 3 and model.meta["n_pairs"] == len(rows)
    assert model.heads.shape == (1 + cfg.n_bootstrap, 1 + len(features.HAND_FEATURES))
    assert not np.allclose(model.heads[1], model.heads[2])  # bootstrap members: own data subsets
    # the encoder really moved away from the packaged weights, and its projection from zero
    assert float(model.scorer.proj.weight.detach().abs().sum()) > 0
    # second use loads from the cache without training
    mtime = (folder / "model.pt").stat().st_mtime_ns
    judge = make_annotator("distilled_gpt4", variant="best", config=cfg, data_dir=data_dir)
    assert CE.BEST_BUILD_COUNT == before + 1 and (folder / "model.pt").stat().st_mtime_ns == mtime
    sub = rows[:6]
    ins, inp = [r["instruction"] for r in sub], [r["input"] for r in sub]
    o1, o2 = [r["output_1"] for r in sub], [r["output_2"] for r in sub]
    ab = judge.compare(ins, inp, o1, o2)
    scored = judge.best.n_scored
    ba = judge.compare(ins, inp, o2, o1)
    assert judge.best.n_scored == scored, "per-text scores must come from the cache the second time"
    for x, y in zip(ab, ba):
        assert x.probability == 1.0 - y.probability or x.probability == pytest.approx(1.0 - y.probability, abs=1e-12)
        assert x.preference == 3.0 - y.preference
    same = judge.compare(ins[:2], inp[:2], o1[:2], o1[:2])
    assert [a.probability for a in same] == [0.5, 0.5] and [a.preference for a in same] == [1.5, 1.5]
    # pools over the best variant: members are its bootstrap heads, noise-free pool = the member's own judgment
    pooled = PooledJudge(config=cfg, data_dir=data_dir)
    assert len(pooled.members) == cfg.n_bootstrap and CE.BEST_BUILD_COUNT == before + 1
    anns = pooled.compare(ins, inp, o1, o2, seed=0)
    for i, a in enumerate(anns):
        member = pooled.members[pooled.assign_member(ins[i], inp[i], 0)]
        direct = member.compare([ins[i]], [inp[i]], [o1[i]], [o2[i]])[0]
        assert a.preference == direct.preference and a.probability == pytest.approx(direct.probability, abs=1e-9)
    with pytest.raises(ValueError, match="variant"):
        DistilledJudge(variant="huge")


# ----------------------------------------------------------------------------------------------- answer bank
def _bank_rows(rows):
    return [r for r in rows if r["output_1"] != r["output_2"]]


def test_answer_bank_features_see_labels_but_never_excluded_ones(built):
    """Bank features read GPT-4's labels of other answers to the same instruction; an excluded model's labels (the
    held-out model in leave-one-model-out, a training pair's own model) cannot move them."""
    from alpaca_farm_env.judge.answer_bank import BANK_FEATURES, AnswerBank

    _, rows, _, _ = built
    rows = _bank_rows(rows)
    bank = AnswerBank(rows)
    prompts = {(r["instruction"], r["input"]) for r in rows}
    assert len(bank) == len(prompts) and all(bank.has(i, x) for i, x in prompts)
    assert not bank.has("Write a haiku about a tortoise named Greg.", "")
    q = bank.query([r["instruction"] for r in rows], [r["input"] for r in rows], [r["output_2"] for r in rows])
    assert all(x is not None for x in q)
    own = bank.features(q)
    k_label = BANK_FEATURES.index("knn_label_t0.05")
    # an answer that is itself in the bank finds itself (similarity 1): the sharp kNN label is its own GPT-4 label
    for r, f in zip(rows, own):
        if r["preference"] in (1.0, 2.0):
            assert np.sign(f[k_label]) == np.sign(r["preference"] - 1.5)
    # the reference is a bank entry labelled 1/2 and is 1.0-similar to itself
    qr = bank.query([rows[0]["instruction"]], [rows[0]["input"]], [rows[0]["output_1"]])
    assert qr[0].reference_sim == pytest.approx(1.0, abs=1e-5)
    # flip the labels of one model: features excluding it are unchanged, features that see it change
    m = rows[0]["model"]
    excl = [(m,)] * len(rows)
    before_excl, before_all = bank.features(q, excl), bank.features(q)
    flipped = bank.models == m
    bank.labels[flipped] = 1.0 - bank.labels[flipped]
    np.testing.assert_array_equal(bank.features(q, excl), before_excl)
    assert not np.allclose(bank.features(q), before_all)
    # per-pair holdout (bank_holdout): hiding a pair's own outputs makes its features blind to their own labels
    i = next(k for k, r in enumerate(rows) if r["preference"] in (1.0, 2.0))
    entry = int(np.flatnonzero(bank.texts == rows[i]["output_2"])[0])
    hide = [(rows[i]["output_1"], rows[i]["output_2"])]
    held, seen = bank.features(q[i : i + 1], exclude_texts=hide), bank.features(q[i : i + 1])
    bank.labels[entry] = 1.0 - bank.labels[entry]
    np.testing.assert_array_equal(bank.features(q[i : i + 1], exclude_texts=hide), held)
    assert not np.allclose(bank.features(q[i : i + 1]), seen)
    # no bank for an instruction: zero features (the judge uses its global head there)
    assert bank.query(["Write a haiku about a tortoise named Greg."], [""], ["Slow shell, bright sun"]) == [None]


def test_judge_scores_bank_instructions_with_bank_heads_and_others_with_global_head(built, data_dir):
    config, rows, art, _ = built
    judge = DistilledJudge(config=config, artifact=art, data_dir=data_dir, head=1)
    assert judge.bank is not None and judge.bank_artifact is not None
    assert judge.bank_artifact.heads.W1.shape[:2] == (1 + config.n_bootstrap, config.bank_hidden)
    r = rows[0]
    novel = "Write a haiku about a tortoise named Greg."
    ins, inp = [r["instruction"], novel], [r["input"], ""]
    o1, o2 = [r["output_1"], "Slow shell, bright sun."], [r["output_2"], "Greg walks. Greg rests. Greg walks on."]
    ab, ba = judge.compare(ins, inp, o1, o2), judge.compare(ins, inp, o2, o1)
    assert [a.extra["scored_by"] for a in ab] == ["bank", "global"]
    for x, y in zip(ab, ba):  # order symmetry with either head
        assert x.probability == pytest.approx(1.0 - y.probability, abs=1e-9) and x.preference == 3.0 - y.preference
    # bank=False: the global head everywhere (the same score as the artifact's linear head)
    plain = DistilledJudge(config=config, artifact=art, data_dir=data_dir, head=1, bank=False)
    assert plain.bank is None and plain.compare(ins, inp, o1, o2)[0].extra["scored_by"] == "global"
    # the bank heads were trained once (cached by config and bank content) and are reused
    count = files.BUILD_COUNT
    again = DistilledJudge(config=config, artifact=art, data_dir=data_dir)
    assert files.BUILD_COUNT == count
    np.testing.assert_array_equal(again.bank_artifact.heads.W1, judge.bank_artifact.heads.W1)


def test_bank_heads_pool_members_differ_and_pool_uses_bank(built, data_dir):
    config, rows, _, _ = built
    pooled = PooledJudge(config=config, data_dir=data_dir)
    members = list(pooled.members.values())
    heads = members[0].bank_artifact.heads
    assert len(members) == config.n_bootstrap and all(m.bank is members[0].bank for m in members)  # one shared bank
    assert not np.allclose(heads.W1[1], heads.W1[2])  # bootstrap members: own seed and data subset
    anns = pooled.compare([r["instruction"] for r in rows[:10]], [r["input"] for r in rows[:10]],
                          [r["output_1"] for r in rows[:10]], [r["output_2"] for r in rows[:10]], seed=0)
    assert {a.extra.get("scored_by") for a in anns if a.extra} <= {"bank"}
