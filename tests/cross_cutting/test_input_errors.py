"""Bad input gives a clear error, at the point it is given: the exception type and a message naming the file, key or
value at fault (issue "numbers you can trust")."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.cli import main
from alpaca_farm_env.data import REFERENCES, describe, load_eval_set, read_records
from alpaca_farm_env.data.loader import HF_FARM_ENV, _eval_set_cached
from alpaca_farm_env.envs.source import cached_backend_count
from alpaca_farm_env.errors import AlpacaFarmError, ConfigError, DataFormatError, DataNotFoundError
from alpaca_farm_env.registry import UnknownSpecError

SMALL = {"split": "eval", "indices": [0, 1, 2]}
EOS = 258  # the byte tokenizer's </s>


# ----------------------------------------------------------------------------------------- 1. unknown reward names
@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: gym.make("AlpacaFarm-v0", **SMALL, **kw),
        lambda **kw: gym.make_vec("AlpacaFarm-v0", num_envs=2, **SMALL, **kw),
        lambda **kw: gym.make("AlpacaFarmToken-v0", **SMALL, max_prompt_tokens=1024, **kw),
    ],
    ids=["text", "vector", "token"],
)
def test_unknown_reward_name_fails_at_construction(make):
    with pytest.raises(ConfigError) as e:
        make(reward="no_such_reward")
    assert isinstance(e.value, KeyError) and isinstance(e.value, UnknownSpecError)  # older callers catch KeyError
    msg = str(e.value)
    assert "'no_such_reward'" in msg and "length" in msg and "annotator" in msg  # the value and the known names
    with pytest.raises(ConfigError, match=r"reward_kwargs\['annotator'\]: unknown annotator 'no_such_annotator'.*noisy_pooled"):
        make(reward="annotator", reward_kwargs={"annotator": "no_such_annotator"})
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        make(reward="no_such_module_xyz:Reward")


def test_known_reward_name_still_builds_the_backend_lazily():
    before = cached_backend_count()
    env = gym.make("AlpacaFarm-v0", **SMALL, reward="annotator", reward_kwargs={"annotator": "longer", "seed": 9173})
    assert env.unwrapped._backend is None and cached_backend_count() == before  # nothing built in __init__
    env.reset(seed=0)
    _, reward, *_ = env.step("a response")
    assert reward in (0.0, 0.5, 1.0) and cached_backend_count() == before + 1


# ----------------------------------------------------------------------------------------- 2. vector env actions
@pytest.mark.parametrize("actions, kind", [({"a": 1, "bb": 2}, "dict"), ({"a", "bb"}, "set"), ("ab", "str")])
def test_vector_env_rejects_unordered_or_scalar_actions(actions, kind):
    venv = gym.make_vec("AlpacaFarm-v0", num_envs=2, **SMALL, reward="length")
    venv.reset(seed=0)
    with pytest.raises(TypeError, match=rf"actions must be a list, tuple or numpy array of 2 response strings, got {kind}$"):
        venv.step(actions)
    for ok in (["a", "bb"], ("a", "bb"), np.array(["a", "bb"])):
        _, rewards, *_ = venv.step(ok)
        assert rewards.tolist() == [1.0, 2.0]


# ----------------------------------------------------------------------------------------- 3. token env actions
def test_token_env_accepts_only_integer_token_ids():
    env = gym.make("AlpacaFarmToken-v0", **SMALL, reward="length", max_prompt_tokens=1024, max_new_tokens=8)
    env.reset(seed=0)
    for bad, shown in [(65.7, "float 65.7"), ("65", "str '65'"), (True, "bool True"), (np.array(65.0), "ndarray"),
                       (np.array([65]), "ndarray array([65])")]:
        with pytest.raises(TypeError, match="the action is a token id") as e:
            env.step(bad)
        assert shown in str(e.value)
    # integers in every form SB3 and Discrete.sample() hand over
    for ok in (104, np.int64(105), np.array(33, dtype=np.int64), np.array(33, dtype=np.uint8)):
        env.step(ok)
    *_, term, _, info = env.step(EOS)
    assert term and info["response"] == "hi!!"


# ----------------------------------------------------------------------------------------- 4. eval-set checks
def _data_dir_with(tmp_path: Path, data_dir: Path, edit: dict[str, callable]) -> Path:
    """The real data dir (top-level entries symlinked) with ``alpacafarm_eval/`` rebuilt: the reference files named
    in ``edit`` rewritten with ``edit[reference](rows)``, every other file symlinked."""
    root = tmp_path / "data"
    root.mkdir()
    for entry in data_dir.iterdir():
        if entry.name != "alpacafarm_eval":
            (root / entry.name).symlink_to(entry)
    (root / "alpacafarm_eval").mkdir()
    for f in (data_dir / "alpacafarm_eval").iterdir():
        (root / "alpacafarm_eval" / f.name).symlink_to(f)
    for reference, change in edit.items():
        path = root / REFERENCES[reference]
        rows = json.loads(path.read_text())
        path.unlink()
        path.write_text(json.dumps(change(rows)))
    return root


def test_truncated_reference_is_rejected_by_the_loader_and_the_cli(tmp_path, data_dir, capsys):
    root = _data_dir_with(tmp_path, data_dir, {"alpacafarm": lambda rows: rows[:-1]})
    path = root / REFERENCES["alpacafarm"]
    with pytest.raises(DataFormatError, match=r"804 rows, expected the 805") as e:
        load_eval_set("alpacafarm", root)
    assert str(e.value).startswith(f"{path}:")
    with pytest.raises(DataFormatError, match=r"804 rows"):
        describe(root)
    assert main(["data", "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "804 rows, expected the 805" in err


def test_reordered_reference_b_names_both_files_and_the_row(tmp_path, data_dir, capsys):
    root = _data_dir_with(tmp_path, data_dir, {"alpacaeval1": lambda rows: [rows[1], rows[0], *rows[2:]]})
    path_b, path_a = root / REFERENCES["alpacaeval1"], root / REFERENCES["alpacafarm"]
    assert len(load_eval_set("alpacafarm", root)) == 805  # (A) itself is fine
    with pytest.raises(DataFormatError) as e:
        load_eval_set("alpacaeval1", root)
    msg = str(e.value)
    assert msg.startswith(f"{path_b}, row 0, field 'instruction': differs from row 0 of {path_a}")
    assert main(["data", "--data-dir", str(root)]) == 2
    assert f"{path_b}, row 0" in capsys.readouterr().err


def test_wrong_dataset_counts_are_named(tmp_path, data_dir):
    def relabel(rows):
        first_koala = next(i for i, r in enumerate(rows) if r["dataset"] == "koala")
        rows[first_koala]["dataset"] = "vicuna"
        return rows

    root = _data_dir_with(tmp_path, data_dir, {"alpacaeval1": relabel})
    with pytest.raises(DataFormatError) as e:
        load_eval_set("alpacaeval1", root)
    assert str(e.value) == (
        f"{root / REFERENCES['alpacaeval1']}, field 'dataset': rows per dataset differ from the eval set's: "
        "koala: 155 (expected 156); vicuna: 81 (expected 80)"
    )


def test_intact_copy_passes_every_check(tmp_path, data_dir, capsys):
    root = _data_dir_with(tmp_path, data_dir, {})
    assert describe(root)["eval"]["n"] == 805
    assert main(["data", "--data-dir", str(root)]) == 0
    assert "references: alpacafarm, alpacaeval1 (checked: same 805 prompts in the same order)" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- 5. unreadable paths
def test_directory_instead_of_a_json_file(tmp_path):
    (tmp_path / "rows.json").mkdir()
    with pytest.raises(DataNotFoundError) as e:
        read_records(tmp_path / "rows.json", {"instruction": str})
    assert str(e.value) == f"{tmp_path / 'rows.json'}: is a directory, expected a JSON file"
    with pytest.raises(DataNotFoundError, match=r"rows\.json: no such file$"):
        read_records(tmp_path / "missing" / "rows.json", {"instruction": str})


def test_unreadable_file_names_the_file():
    # root reads any file, so as root the read is made as user 'nobody' (uid 65534); the directory must let it in
    folder = Path(tempfile.mkdtemp(prefix="alpaca_farm_unreadable_"))
    try:
        folder.chmod(0o755)
        path = folder / "rows.json"
        path.write_text(json.dumps([{"instruction": "Say hi"}]))
        path.chmod(0)
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(65534)
        try:
            with pytest.raises(DataNotFoundError) as e:
                read_records(path, {"instruction": str})
        finally:
            if as_root:
                os.seteuid(0)
        assert str(e.value) == f"{path}: cannot read: Permission denied"
    finally:
        shutil.rmtree(folder)


# ----------------------------------------------------------------------------------------- 6. hub unreachable
def test_no_data_dir_and_no_hub_is_one_clear_line(monkeypatch, capsys):
    repo = "alpaca-farm-env-tests/no-such-dataset"
    monkeypatch.delenv("ALPACA_FARM_DATA_DIR", raising=False)
    monkeypatch.setenv(HF_FARM_ENV, repo)
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest: this machine has no network anyway
    _eval_set_cached.cache_clear()  # a hub eval set cached by an earlier test would hide the failure
    with pytest.raises(DataNotFoundError) as e:
        load_eval_set()
    msg = str(e.value)
    assert isinstance(e.value, AlpacaFarmError) and "\n" not in msg
    assert msg.startswith(f"no local data dir (set ALPACA_FARM_DATA_DIR or --data-dir) and the hub dataset {repo} "
                          "(alpaca_farm_evaluation, eval) could not be loaded (")
    assert main(["data"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ALPACA_FARM_DATA_DIR" in err and repo in err and len(err.splitlines()) == 1
