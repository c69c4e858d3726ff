"""The hub code path (``datasets.load_dataset``) fed with local folders laid out like the hub repos.

The folders are written to a temp dir from the offline data copy (never into the project), with the same config
and split names as ``tatsu-lab/alpaca_farm`` and ``tatsu-lab/alpaca_eval``.
"""
import json

import pytest

from alpaca_farm_env.data import load_eval_set, load_preference, load_split
from alpaca_farm_env.data.loader import HF_EVAL_ENV, HF_FARM_ENV, _eval_set_cached


def _write_repo(root, configs: dict[str, dict[str, list[dict]]]) -> None:
    yaml = ["---", "configs:"]
    for config, splits in configs.items():
        yaml += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            path = root / config / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            yaml += [f"  - split: {split}", f"    path: {config}/{split}.jsonl"]
    (root / "README.md").write_text("\n".join(yaml + ["---", ""]))


@pytest.fixture
def hub_repos(tmp_path, data_dir, monkeypatch):
    farm_eval = json.loads((data_dir / "alpacafarm_eval/alpacafarm_paper_reference_text_davinci_003.json").read_text())
    ae_eval = json.loads((data_dir / "alpacafarm_eval/alpaca_eval_v1_reference_text_davinci_003.json").read_text())
    sft = load_split("sft", data_dir)[:50]
    prefs = load_preference("alpaca_gpt4_preference", data_dir)[:40]
    _write_repo(tmp_path / "farm", {
        "alpaca_farm_evaluation": {"eval": farm_eval},
        "alpaca_instructions": {"sft": sft},
        "alpaca_gpt4_preference": {"preference": prefs},
    })
    _write_repo(tmp_path / "eval", {"alpaca_eval": {"eval": ae_eval}})
    monkeypatch.delenv("ALPACA_FARM_DATA_DIR", raising=False)
    monkeypatch.setenv(HF_FARM_ENV, str(tmp_path / "farm"))
    monkeypatch.setenv(HF_EVAL_ENV, str(tmp_path / "eval"))
    _eval_set_cached.cache_clear()
    yield {"sft": sft, "prefs": prefs}
    _eval_set_cached.cache_clear()


def test_hub_path_matches_local_loader(hub_repos, data_dir):
    for reference in ("alpacafarm", "alpacaeval1"):
        hub = load_eval_set(reference)  # no data dir: the datasets code path
        local = load_eval_set(reference, data_dir)
        assert len(hub) == 805
        assert [(r["instruction"], r["input"], r["dataset"]) for r in hub] == [
            (r["instruction"], r["input"], r["dataset"]) for r in local
        ]
        assert [r["reference_output"] for r in hub] == [r["reference_output"] for r in local]
    assert load_split("sft") == hub_repos["sft"]
    prefs = load_preference("alpaca_gpt4_preference")
    assert [p["preference"] for p in prefs] == [p["preference"] for p in hub_repos["prefs"]]
