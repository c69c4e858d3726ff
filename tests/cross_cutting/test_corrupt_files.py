"""Corrupt, truncated or misplaced files and refused API calls end in a clear error or a logged recovery.

Real components throughout: truncated copies of the packaged judge artifacts, real SQLite files cut short or
overwritten, the real local HTTP server of tests/openai_test_server.py. Every cache lives in a temporary directory
(``ALPACA_FARM_CACHE``), so the user's caches are never touched.
"""
from __future__ import annotations

import logging
import sqlite3
import sys
import threading
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.annotators.cache import AnnotationCache, is_corrupt_database
from alpaca_farm_env.annotators.openai_backend import AnnotatorAPIError, OpenAIPool
from alpaca_farm_env.envs.source import clear_reward_cache
from alpaca_farm_env.errors import AlpacaFarmError, AnnotatorError, CorruptFileError
from alpaca_farm_env.judge import bank_heads, features, files, heads, training_data
from alpaca_farm_env.judge.answer_bank import AnswerBank
from alpaca_farm_env.judge.config import JudgeConfig
from alpaca_farm_env.judge.features import (
    EMBED_DIM,
    N_FEATURES,
    EmbeddingCache,
    MiniLMEncoder,
    text_digest,
)
from alpaca_farm_env.judge.global_features import N_COMPACT_FEATURES
from alpaca_farm_env.judge.judge import DistilledJudge
from alpaca_farm_env.utils import atomic_write

sys.path.insert(0, str(Path(__file__).parents[1]))
from openai_test_server import ScriptedOpenAIServer  # noqa: E402

KEY = "sk-test-SECRET-0123456789"
PAIR = dict(instructions=["Name the three primary colors of paint."], inputs=[""],
            outputs_1=["The three primary colors of paint are red, yellow and blue."], outputs_2=[""])


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty per-test cache dir (judge artifacts, embeddings)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("ALPACA_FARM_CACHE", str(root))
    return root


def warnings_naming(caplog, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and str(path) in r.getMessage()]


def aside(path: Path) -> Path:
    return path.with_name(path.name + ".corrupt")


# ----------------------------------------------------------------------------------------------- judge artifacts
@pytest.mark.slow
def test_truncated_cached_judge_artifact_is_moved_aside_and_restored_from_the_package(cache, caplog):
    config = JudgeConfig()
    shipped = heads.packaged_artifact(config)
    assert shipped is not None, "the package ships the default judge artifact"
    path = heads.artifact_path(config, heads.global_head_data(config, None))
    truncated = shipped.read_bytes()[: shipped.stat().st_size // 2]
    path.write_bytes(truncated)
    with pytest.raises(CorruptFileError, match="not a readable judge artifact") as ei:
        heads.JudgeArtifact.load(path)
    assert ei.value.path == path and str(path) in str(ei.value)

    caplog.set_level(logging.WARNING)
    builds = files.BUILD_COUNT
    judge = DistilledJudge(bank=False)
    assert files.BUILD_COUNT == builds  # restored from the package, not retrained
    assert any("moved it aside" in m for m in warnings_naming(caplog, path))
    assert aside(path).read_bytes() == truncated
    assert path.read_bytes() == shipped.read_bytes()
    np.testing.assert_array_equal(heads.JudgeArtifact.load(path).heads, judge.artifact.heads)
    ann = judge.compare(PAIR["instructions"], PAIR["inputs"], PAIR["outputs_1"], PAIR["outputs_2"])[0]
    assert ann.extra["scored_by"] == "global" and 0.0 < ann.probability < 0.5
    assert ann.preference == 1.0  # the empty answer loses to the real one


@pytest.mark.slow
def test_default_env_reward_survives_a_garbage_judge_artifact(cache, caplog):
    """``gym.make("AlpacaFarm-v0")`` with the annotator reward over the distilled pool (noise-free here, so that the
    label comes from a judge head and not a coin: the noisy pool draws its coins per episode)."""
    path = heads.artifact_path(JudgeConfig(), heads.global_head_data(JudgeConfig(), None))
    path.write_bytes(b"\x00" * 4096)
    caplog.set_level(logging.WARNING)
    clear_reward_cache()  # reward backends are shared per process: build this one now
    env = gym.make("AlpacaFarm-v0", split="unlabeled", indices=[2], reward_kwargs={"bank": False, "annotator": "pooled"})
    try:
        env.reset(seed=0)
        _, reward, terminated, _, info = env.step("Here is a short but reasonable answer.")
    finally:
        env.close()
        clear_reward_cache()
    assert terminated and reward in (0.0, 1.0) and info["annotator"].startswith("distilled_gpt4_h")
    assert not info["is_noisy_label"] and info["extra"]["scored_by"] == "global"  # scored by a judge head
    assert warnings_naming(caplog, path) and aside(path).read_bytes() == b"\x00" * 4096
    assert heads.JudgeArtifact.load(path).heads.shape[1] == N_COMPACT_FEATURES


def test_truncated_bank_heads_are_moved_aside_and_retrained(cache, caplog, data_dir):
    rows = training_data.load_training_pairs(data_dir, ("phi-2",), 30)
    bank = AnswerBank(rows)
    config = JudgeConfig(models=("phi-2",), max_pairs_per_model=30, n_bootstrap=1, bank_epochs=3)
    first, path = bank_heads.get_bank_heads(config, bank, "phi2-30", progress=False)
    path.write_bytes(path.read_bytes()[:300])
    caplog.set_level(logging.WARNING)
    builds = files.BUILD_COUNT
    again, path2 = bank_heads.get_bank_heads(config, bank, "phi2-30", progress=False)
    assert path2 == path and files.BUILD_COUNT == builds + 1  # retrained (no packaged heads for this bank)
    assert warnings_naming(caplog, path) and aside(path).stat().st_size == 300
    reloaded = bank_heads.BankArtifact.load(path)
    assert reloaded.meta["bank"] == bank.key
    np.testing.assert_allclose(reloaded.heads.W1, first.heads.W1, rtol=1e-5, atol=1e-6)  # seeded: the same heads


def test_corrupt_packaged_artifact_is_an_error_naming_it(cache, tmp_path, monkeypatch):
    """The shipped file is never moved or silently replaced: the user is told to reinstall (or build their own)."""
    shipped = heads.packaged_artifact(JudgeConfig())
    package = tmp_path / "package_artifacts"
    package.mkdir()
    broken = package / shipped.name
    broken.write_bytes(shipped.read_bytes()[:1000])
    monkeypatch.setattr(files, "PACKAGED_ARTIFACTS", package)  # the real code path, on a truncated copy
    with pytest.raises(CorruptFileError) as ei:
        heads.get_artifact(JudgeConfig(), progress=False)
    msg = str(ei.value)
    assert isinstance(ei.value, AlpacaFarmError) and ei.value.path == broken
    assert msg.startswith(f"{broken}: the artifact shipped with the package is unreadable")
    assert "reinstall" in msg and "alpaca-farm judge train --force" in msg
    assert broken.stat().st_size == 1000 and not heads.artifact_path(JudgeConfig(), heads.global_head_data(JudgeConfig(), None)).exists()


def test_concurrent_saves_of_one_artifact_never_share_a_temp_file(tmp_path):
    path = tmp_path / "distilled_fast_x.npz"
    art = heads.JudgeArtifact(scale=np.ones(N_FEATURES, np.float32), heads=np.zeros((2, N_FEATURES), np.float32),
                          meta={"n_pairs": 1})
    errors: list[BaseException] = []

    def save_many():
        try:
            for _ in range(10):
                art.save(path)
        except BaseException as e:  # noqa: BLE001 -- collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=save_many) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    assert heads.JudgeArtifact.load(path).meta == {"n_pairs": 1}
    # a writer that fails half-way leaves the previous file intact and no temp file
    with pytest.raises(ZeroDivisionError):
        atomic_write(path, lambda f: (f.write(b"half"), 1 / 0))
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and heads.JudgeArtifact.load(path).meta == {"n_pairs": 1}


@pytest.mark.slow
def test_truncated_best_judge_model_and_checkpoint_are_moved_aside_and_retrained(cache, caplog, data_dir):
    from alpaca_farm_env.judge import cross_encoder as CE

    rows = training_data.load_training_pairs(data_dir, ("phi-2",), 4)
    cfg = CE.CrossEncoderConfig(models=("phi-2",), max_pairs_per_model=4, max_length=16, batch_pairs=4, max_steps=1,
                                n_pool_pairs=4, n_bootstrap=1, warmup_steps=1)
    CE.get_best_model(cfg, data_dir, progress=False, rows=rows, checkpoint_every=1)
    folder = CE.artifact_dir(cfg)
    for name in ("model.pt", "checkpoint.pt"):
        (folder / name).write_bytes((folder / name).read_bytes()[:2000])
    caplog.set_level(logging.WARNING)
    builds = CE.BEST_BUILD_COUNT
    model = CE.get_best_model(cfg, data_dir, progress=False, rows=rows, checkpoint_every=1)
    assert CE.BEST_BUILD_COUNT == builds + 1
    for name in ("model.pt", "checkpoint.pt"):
        assert warnings_naming(caplog, folder / name) and aside(folder / name).stat().st_size == 2000
    assert model.meta["resumed_from_step"] == 0 and model.meta["steps"] == 1  # the checkpoint was not resumed
    assert CE.BestJudgeModel(folder).heads.shape == (2, 1 + len(features.HAND_FEATURES))


# ----------------------------------------------------------------------------------------------- embedding cache
def _fill(cache: EmbeddingCache, keys: list[str]) -> None:
    rng = np.random.default_rng(0)
    cache.put_many({k: rng.standard_normal(EMBED_DIM).astype(np.float32) for k in keys})


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_unreadable_embedding_cache_is_moved_aside_and_the_encoder_still_works(kind, tmp_path, caplog):
    path = tmp_path / "minilm.sqlite"
    texts = [f"Answer number {i}: the quick brown fox." for i in range(120)]
    if kind == "garbage":
        path.write_bytes(b"this is not an SQLite database\n" * 100)
    else:  # a real cache of these texts' (random) vectors, cut to a third: readable header, missing pages
        tag = MiniLMEncoder().tag
        _fill(EmbeddingCache(path), [text_digest(t, tag) for t in texts])
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    bad = path.read_bytes()
    caplog.set_level(logging.WARNING)
    enc = MiniLMEncoder(cache=EmbeddingCache(path))
    vecs = enc.encode(texts)
    assert enc.n_encoded == len(texts)  # nothing read from the unreadable file
    assert vecs.shape == (len(texts), EMBED_DIM) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert any("moved it aside" in m for m in warnings_naming(caplog, path))
    assert aside(path).read_bytes() == bad
    fresh = MiniLMEncoder(cache=EmbeddingCache(path))  # the new cache holds what was computed
    np.testing.assert_array_equal(fresh.encode(texts[:3]), vecs[:3])
    assert fresh.n_encoded == 0


def test_embedding_cache_overwritten_while_in_use_starts_over(tmp_path, caplog):
    path = tmp_path / "scores.sqlite"
    cache = EmbeddingCache(path)
    _fill(cache, ["a", "b"])
    assert set(cache.get_many(["a", "b"])) == {"a", "b"}
    path.write_bytes(b"\xff" * 8192)  # e.g. a disk error or another program writing over it
    caplog.set_level(logging.WARNING)
    assert cache.get_many(["a", "b"]) == {}
    assert warnings_naming(caplog, path) and aside(path).read_bytes() == b"\xff" * 8192
    cache.put_many({"c": np.ones(EMBED_DIM, np.float32)})
    assert set(EmbeddingCache(path).get_many(["a", "c"])) == {"c"}


# ----------------------------------------------------------------------------------------------- annotation cache
def _paid_cache(path: Path, n: int = 300) -> None:
    c = AnnotationCache(path)
    for i in range(n):
        c.put_batch(config_hash="h", member="gpt4_1", model="gpt-4o", request_id=f"r{i}", items=[(f"k{i}", 2.0)],
                    raw_completion="Output (b) " * 40, prompt_tokens=100, completion_tokens=10, cost=0.001)
    c.close()


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_unreadable_annotation_cache_is_an_error_and_is_left_untouched(kind, tmp_path):
    """It holds paid API answers: never moved, emptied or replaced silently."""
    path = tmp_path / "openai_annotations.sqlite"
    if kind == "garbage":
        path.write_bytes(b"\x00not sqlite\x00" * 500)
    else:
        _paid_cache(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    bad = path.read_bytes()
    with pytest.raises(CorruptFileError) as ei:
        AnnotationCache(path).get_many("h", [f"k{i}" for i in range(300)])  # garbage: already at open
    msg = str(ei.value)
    assert ei.value.path == str(path) and msg.startswith(f"{path}: the annotations cache is not a readable SQLite")
    assert "paid" in msg and "move it aside" in msg and "cache_path" in msg
    if kind == "garbage":  # the API pool opens it when built: the same error (no request is ever sent)
        with pytest.raises(CorruptFileError, match="annotations cache"):
            OpenAIPool("alpaca_farm", members=["gpt4_4"], api_key=KEY, cache_path=path)
    assert path.read_bytes() == bad and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_directory_as_cache_path_is_a_clear_error_naming_it(tmp_path):
    folder = tmp_path / "annotations.sqlite"
    folder.mkdir()
    makers = {
        "AnnotationCache": AnnotationCache,
        "EmbeddingCache": EmbeddingCache,
        "OpenAIPool": lambda p: OpenAIPool("alpaca_farm", members=["gpt4_4"], api_key=KEY, cache_path=p),
    }
    for name, make in makers.items():
        with pytest.raises(CorruptFileError) as ei:
            make(folder)
        assert str(ei.value).startswith(f"{folder}: is a directory, expected the SQLite"), name
    assert folder.is_dir() and not any(folder.iterdir())


# ----------------------------------------------------------------------------------------------- API errors
def _pool(url: str, **kw) -> OpenAIPool:
    kw = {"api_key": KEY, "model": "test-model", "cache_path": ":memory:", "backoff_base": 0.01,
          "show_progress": False, **kw}
    return OpenAIPool("alpaca_farm", members=["gpt4_4"], base_url=url, **kw)


def _one_row():
    return ["Question?"], [""], ["first [[s=1]]"], ["second [[s=2]]"]


def test_401_is_a_one_line_alpaca_farm_error_naming_endpoint_and_model_never_the_key():
    with ScriptedOpenAIServer(api_key="sk-the-right-key") as srv:
        p = _pool(srv.url)  # a wrong key, which this server echoes back in full in its error message
        with pytest.raises(AlpacaFarmError) as ei:
            p.compare(*_one_row())
        sent = srv.log[0]["auth"]
        n_requests = srv.count()
    err = ei.value
    assert isinstance(err, AnnotatorAPIError) and isinstance(err, AnnotatorError) and isinstance(err, RuntimeError)
    msg = str(err)
    assert sent == f"Bearer {KEY}" and n_requests == 1  # the key was sent; a 401 is not retried
    assert KEY not in msg and "\n" not in msg
    assert msg.startswith(f"authentication failed (HTTP 401) at {srv.url} for model 'test-model' of annotator 'gpt4_4'")
    assert "Check the API key (OPENAI_API_KEY or api_key=...)" in msg


def test_404_unknown_model_names_endpoint_and_model():
    with ScriptedOpenAIServer(known_models={"test-model"}) as srv:
        p = _pool(srv.url, model="no-such-model")
        with pytest.raises(AnnotatorAPIError) as ei:
            p.compare(*_one_row())
        n_requests = srv.count()
    msg = str(ei.value)
    assert n_requests == 1 and KEY not in msg
    assert msg.startswith(f"model not found (or wrong base_url) (HTTP 404) at {srv.url} for model 'no-such-model'")
    assert "Check the model name (model= / model_overrides=)" in msg


def test_connection_refused_is_retried_then_an_annotator_error_naming_the_endpoint():
    srv = ScriptedOpenAIServer().start()
    url = srv.url
    srv.stop()  # nothing listens on this port any more: connections are refused
    host_port = url.removeprefix("http://").removesuffix("/v1")
    p = _pool(f"http://user:s3cret@{host_port}/v1?api-version=1", max_retries=2)
    with pytest.raises(AnnotatorAPIError) as ei:
        p.compare(*_one_row())
    msg = str(ei.value)
    st = p.backend.stats
    assert st["connection_errors"] == 3 and st["retries"] == 2  # the retries still happen before giving up
    assert msg.startswith(f"cannot connect after 3 attempts at {url} for model 'test-model' of annotator 'gpt4_4'")
    assert "Check that the server is running and that base_url is right" in msg
    assert "s3cret" not in msg and "api-version" not in msg and KEY not in msg  # no credentials from the URL


def test_a_busy_database_is_not_taken_for_a_corrupt_one(tmp_path):
    """Only an unreadable file is moved aside (embeddings) or reported corrupt (annotations); a locked one is not."""
    path = tmp_path / "minilm.sqlite"
    EmbeddingCache(path)
    holder, other = sqlite3.connect(path), sqlite3.connect(path, timeout=0)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError, match="locked") as busy:
            other.execute("SELECT COUNT(*) FROM emb").fetchall()
    finally:
        holder.rollback()
        holder.close()
        other.close()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"x" * 1000)
    con = sqlite3.connect(garbage)
    with pytest.raises(sqlite3.DatabaseError, match="not a database") as notadb:
        con.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
    con.close()
    assert not is_corrupt_database(busy.value) and is_corrupt_database(notadb.value)
