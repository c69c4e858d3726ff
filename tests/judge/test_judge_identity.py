"""The judge as an instrument and a training signal: one identity for caches and run dirs, no label read-back,
noise drawn per episode, the data dir reaching the annotator, and the eval-split warning."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.annotators import annotator_identity, judgment_identity, make_annotator
from alpaca_farm_env.errors import TrainingOnTestSetWarning
from alpaca_farm_env.judge.config import data_fingerprint
from alpaca_farm_env.judge.judge import DistilledJudge, PooledJudge
from alpaca_farm_env.rewards.annotator_reward import reward_is_evaluator

SMALL = {"models": ["falcon-40b-instruct", "gpt4", "phi-2"], "max_pairs_per_model": 40, "n_bootstrap": 2,
         "bank_epochs": 3}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache dir: judges trained here never touch the user's."""
    old = os.environ.get("ALPACA_FARM_CACHE")
    os.environ["ALPACA_FARM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("ALPACA_FARM_CACHE", None)
    else:
        os.environ["ALPACA_FARM_CACHE"] = old


# ----------------------------------------------------------------------------------------------- identity
def test_identity_changes_with_config_data_and_pool_semantics(data_dir, tmp_path):
    base = annotator_identity("pooled", data_dir=data_dir)
    assert base == annotator_identity("pooled", data_dir=data_dir)  # stable
    assert annotator_identity("pooled", data_dir=data_dir, config={"l2": 0.01}) != base
    assert annotator_identity("pooled", data_dir=data_dir, config={"bank_hidden": 16}) != base
    assert annotator_identity("noisy_pooled", data_dir=data_dir) != base  # label noise changes the labels
    assert judgment_identity("noisy_pooled", data_dir=data_dir) == judgment_identity("pooled", data_dir=data_dir)
    assert annotator_identity("pooled", data_dir=data_dir, bank_holdout=True) != base
    # the same files with one label changed: another fingerprint, another judge
    copy = tmp_path / "data"
    copy.mkdir()
    for entry in Path(data_dir).iterdir():
        if entry.name != "alpaca_eval_results":
            (copy / entry.name).symlink_to(entry)
    results = copy / "alpaca_eval_results"
    results.mkdir()
    for entry in (Path(data_dir) / "alpaca_eval_results").iterdir():
        (results / entry.name).symlink_to(entry)
    victim = "phi-2"
    (results / victim).unlink()
    (results / victim / "alpaca_eval_gpt4").mkdir(parents=True)
    (results / victim / "model_outputs.json").symlink_to(Path(data_dir) / "alpaca_eval_results" / victim / "model_outputs.json")
    rows = json.loads((Path(data_dir) / "alpaca_eval_results" / victim / "alpaca_eval_gpt4" / "annotations.json").read_text())
    rows[0]["preference"] = 3 - float(rows[0]["preference"])
    (results / victim / "alpaca_eval_gpt4" / "annotations.json").write_text(json.dumps(rows))
    assert data_fingerprint(copy) != data_fingerprint(data_dir)
    assert annotator_identity("pooled", data_dir=copy) != base


@pytest.mark.parametrize("knob", [{"bt_max_iter": 50}, {"bank_lr": 1e-2}, {"bank_weight_decay": 0.0},
                                  {"bank_batch_size": 256}, {"tfidf_bits": 18}])
def test_every_fitting_knob_is_part_of_the_identity(data_dir, knob):
    assert annotator_identity("pooled", data_dir=data_dir, config=knob) != annotator_identity("pooled", data_dir=data_dir)


def test_training_data_version_changes_every_artifact_key(monkeypatch):
    from alpaca_farm_env.judge import training_data
    from alpaca_farm_env.judge.config import JudgeConfig

    before = (JudgeConfig().key("d" * 10), JudgeConfig().bank_key("d" * 10))
    monkeypatch.setattr(training_data, "TRAINING_DATA_VERSION", training_data.TRAINING_DATA_VERSION + 1)
    after = (JudgeConfig().key("d" * 10), JudgeConfig().bank_key("d" * 10))
    assert before[0] != after[0] and before[1] != after[1]


def test_fitting_knobs_reach_the_fits():
    """The knobs are not only in the key: they change what is fitted."""
    from alpaca_farm_env.judge.answer_bank import HashedTfidf, fit_bank_head
    from alpaca_farm_env.judge.heads import fit_bt_head

    rng = np.random.default_rng(0)
    d = rng.normal(size=(200, 5))
    y = (d @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + rng.normal(size=200) > 0).astype(float)
    assert not np.allclose(fit_bt_head(d, y, 1e-3, max_iter=1), fit_bt_head(d, y, 1e-3, max_iter=200))
    x1, x2 = rng.normal(size=(64, 5)), rng.normal(size=(64, 5))
    mu, sc, w = np.zeros(5), np.ones(5), np.ones(64)
    a = fit_bank_head(x1, x2, y[:64], w, mu, sc, hidden=4, epochs=2, lr=1e-3)
    b = fit_bank_head(x1, x2, y[:64], w, mu, sc, hidden=4, epochs=2, lr=1e-1)
    assert not np.allclose(a[0], b[0])
    assert HashedTfidf(12).fit_transform(["a b c"]).shape[1] == 1 << 12


def test_packaged_artifacts_match_the_default_configuration():
    """A changed default (a knob, the feature spec, the training-data version) must come with rebuilt artifacts."""
    from alpaca_farm_env.judge import files
    from alpaca_farm_env.judge.config import JudgeConfig

    names = {p.name for p in files.PACKAGED_ARTIFACTS.glob("*.npz")}
    data = {n.rsplit("_", 1)[1][:-4] for n in names}
    assert len(data) == 1
    (fp,) = data
    assert names == {f"distilled_fast_{JudgeConfig().key(fp)}.npz", f"distilled_bank_{JudgeConfig().bank_key(fp)}.npz",
                     # the previous global head, for ``global_features="full"``
                     f"distilled_fast_{JudgeConfig(global_features='full').key(fp)}.npz"}


@pytest.mark.slow
def test_built_judge_has_the_identity_computed_without_building_it(data_dir, cache):
    kw = {"config": dict(SMALL), "data_dir": data_dir}
    pooled = make_annotator("pooled", **kw)
    assert pooled.identity == annotator_identity("pooled", **kw) == PooledJudge.identity_for(**kw)
    member = next(iter(pooled.members.values()))
    assert member.identity == DistilledJudge.identity_for(config=dict(SMALL), data_dir=data_dir, head=1)


@pytest.mark.slow
def test_a_changed_judge_never_reuses_cached_annotations(data_dir, cache, tmp_path, capsys):
    """Same run dir, same outputs (generations are reused), another judge configuration: every pair is annotated
    again, and results.json names the judge."""
    from alpaca_farm_env.benchmark.config import load_preset
    from alpaca_farm_env.cli import main

    cfg = load_preset("tiny").to_dict()
    cfg.update(policy="tiny-llama", n_eval=3, name="ident", methods={"sft": {}}, compare_to=None,
               annotator="pooled", annotator_kwargs={"config": dict(SMALL)})
    cfg["generation"].update(max_new_tokens=4, batch_size=3)
    run_dir = tmp_path / "runs" / "r"
    results = []
    for l2 in (3e-3, 1e-2):
        cfg["annotator_kwargs"]["config"]["l2"] = l2
        preset = tmp_path / f"p{l2}.yaml"
        preset.write_text(yaml.safe_dump(cfg))
        # another evaluator config is another preset: the run dir is reused only with --force
        rc = main(["benchmark", "--preset", str(preset), "--run-dir", str(run_dir), "--no-progress", "--data-dir",
                   str(data_dir)] + ["--force"] * bool(results))
        assert rc == 0, capsys.readouterr().err
        results.append(json.loads((run_dir / "results.json").read_text()))
    first, second = results
    assert first["evaluator_identity"] != second["evaluator_identity"]
    counts = json.loads((run_dir / "last_run.json").read_text())["sft"]
    assert counts["n_generations_cached"] == 3  # the outputs are the same...
    assert counts["n_annotations_cached"] == 0  # ...but no annotation of the other judge is reused
    assert first["evaluator_identity"] == annotator_identity("pooled", data_dir=str(data_dir),
                                                             config={**SMALL, "l2": 3e-3})


# ----------------------------------------------------------------------------------------------- leakage guards
@pytest.mark.slow
def test_banked_outputs_are_hidden_from_the_bank_by_default(data_dir):
    """Judging one of the 21 annotated models' own outputs must not read GPT-4's verdict back from the bank: with
    the bank's labels visible the judge agrees with GPT-4 on nearly every pair, hidden it does not."""
    from alpaca_farm_env.data import load_gpt4_annotations

    rows = [r for r in load_gpt4_annotations("guanaco-65b", data_dir) if r["preference"] in (1.0, 2.0)][:120]
    args = ([r["instruction"] for r in rows], [r["input"] for r in rows], [r["output_1"] for r in rows],
            [r["output_2"] for r in rows])
    hidden = DistilledJudge(data_dir=data_dir)  # default: bank_holdout="banked"
    leaky = DistilledJudge(data_dir=data_dir, bank_holdout=False, bank=hidden.bank, bank_artifact=hidden.bank_artifact,
                           artifact=hidden.artifact, encoder=hidden.encoder)
    gpt4 = np.asarray([r["preference"] for r in rows])
    agree_hidden = np.mean([a.preference for a in hidden.compare(*args)] == gpt4)
    anns_leaky = leaky.compare(*args)
    agree_leaky = np.mean([a.preference for a in anns_leaky] == gpt4)
    assert all(a.extra.get("bank_hidden") for a in hidden.compare(*args))
    assert not any(a.extra.get("bank_hidden") for a in anns_leaky)
    assert agree_leaky > agree_hidden + 0.05, (agree_leaky, agree_hidden)
    # a new output is not banked: nothing hidden, same score either way
    new = hidden.compare(args[0][:5], args[1][:5], args[2][:5], ["A brand-new answer."] * 5)
    assert not any(a.extra.get("bank_hidden") for a in new)


@pytest.mark.slow
def test_evaluate_reports_banked_outputs(data_dir, tmp_path, capsys):
    from alpaca_farm_env.cli import main
    from alpaca_farm_env.data import load_model_outputs

    outs = load_model_outputs("guanaco-65b", data_dir)[:6]
    f = tmp_path / "banked.json"
    f.write_text(json.dumps(outs))
    rc = main(["evaluate", "--model-outputs", str(f), "--reference", "alpacaeval1", "--output-dir", str(tmp_path / "o"),
               "--json", "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    res = json.loads(out.out)
    assert res["n_bank_hidden"] == 6 and "answer bank" in out.err
    assert res["annotator_identity"] == annotator_identity("pooled")
    assert res["annotator_identity"][:8] in Path(res["annotations_path"]).name


@pytest.mark.parametrize("reward, reward_kwargs, expected", [
    ("annotator", None, True),  # default noisy_pooled: the evaluator plus label noise
    ("annotator", {"annotator": "alpaca_farm_env.judge.judge:PooledJudge"}, True),  # by path, same judge
    ("annotator", {"annotator": "distilled_gpt4"}, True),  # one head of the same judge
    ("annotator", {"annotator": "longer"}, False),
    ("annotator", {"annotator": "pooled", "config": {"l2": 0.05}}, False),  # another judge
    ("length", None, False),
])
def test_evaluator_guard_compares_judges_not_names(data_dir, reward, reward_kwargs, expected):
    assert reward_is_evaluator(reward, reward_kwargs, "pooled", None, data_dir) is expected


def test_benchmark_refuses_reranking_with_the_evaluators_judge(tmp_path, capsys):
    from alpaca_farm_env.benchmark.config import load_preset
    from alpaca_farm_env.cli import main

    cfg = load_preset("tiny").to_dict()
    cfg.update(policy="tiny-llama", n_eval=2, name="g", runs_root=str(tmp_path / "runs"))
    cfg["methods"]["best_of_n"] = {"n": 2, "reward": "annotator"}  # noisy_pooled vs the pooled evaluator
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump(cfg))
    rc = main(["benchmark", "--preset", str(preset), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "evaluator's judge" in err and "best_of_n" in err
    assert not (tmp_path / "runs").exists()


def test_annotator_reward_on_the_eval_split_warns():
    with pytest.warns(TrainingOnTestSetWarning, match="trains on the test set"):
        gym.make("AlpacaFarm-v0", split="eval", reward="annotator", max_examples=2)
    with pytest.warns(TrainingOnTestSetWarning):
        gym.make_vec("AlpacaFarm-v0", num_envs=2, split="eval", reward="annotator", max_examples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingOnTestSetWarning)
        gym.make("AlpacaFarm-v0", split="eval", reward="length", max_examples=2)
        gym.make("AlpacaFarm-v0", split="unlabeled", reward="annotator", max_examples=2)


# ----------------------------------------------------------------------------------------------- noise per episode
def _labels(env, n, seed):
    env.reset(seed=seed)
    out = []
    for _ in range(n):
        _, reward, *_ = env.step("")  # the empty answer: every judge head prefers the reference
        env.reset()
        out.append(reward)
    return np.asarray(out)


@pytest.mark.slow
def test_noise_is_drawn_per_episode_from_the_env_seed():
    """400 visits of one training prompt with one response: the noisy pool's label differs from the noise-free one
    about 25% of the time (p_label_flip = 0.25: half the labels are a fair coin), both labels occur, and the
    sequence is a function of reset(seed=...)."""
    kw = dict(split="unlabeled", indices=[3], reward="annotator")
    clean = gym.make("AlpacaFarm-v0", reward_kwargs={"annotator": "pooled"}, **kw)
    noisy = gym.make("AlpacaFarm-v0", reward_kwargs={"annotator": "noisy_pooled"}, **kw)
    truth = _labels(clean, 20, seed=0)
    assert np.all(truth == truth[0])  # noise-free, and every member agrees on this pair
    labels = _labels(noisy, 400, seed=0)
    differ = np.mean(labels != truth[0])
    assert 0.18 < differ < 0.32, differ
    assert set(np.unique(labels)) == {0.0, 1.0}
    assert np.array_equal(labels, _labels(noisy, 400, seed=0))  # reproducible from the seed
    assert not np.array_equal(labels, _labels(noisy, 400, seed=1))


def test_vector_env_draws_noise_per_sub_env():
    envs = gym.make_vec("AlpacaFarm-v0", num_envs=4, split="unlabeled", indices=[3], reward="annotator",
                        reward_kwargs={"annotator": "noisy_pooled"})
    envs.reset(seed=0, options={"index": [0, 0, 0, 0]})
    rewards = np.concatenate([envs.step([""] * 4)[1] for _ in range(50)])
    assert 0.1 < np.mean(rewards) < 0.45  # the same pair in four sub-envs at once still gets independent coins


@pytest.mark.slow
def test_data_dir_reaches_the_annotator(data_dir, monkeypatch):
    monkeypatch.delenv("ALPACA_FARM_DATA_DIR")
    with pytest.warns(TrainingOnTestSetWarning):
        env = gym.make("AlpacaFarm-v0", split="eval", reward="annotator", reward_kwargs={"annotator": "pooled"},
                       data_dir=str(data_dir), max_examples=1)
    env.reset(seed=0)
    _, _, _, _, info = env.step("An answer.")
    judge = env.unwrapped.reward_backend.annotator
    assert judge.identity == annotator_identity("pooled", data_dir=str(data_dir))
    assert all(m.bank is not None for m in judge.members.values())  # the bank came from the env's data dir
    assert info["extra"]["scored_by"] == "bank"
