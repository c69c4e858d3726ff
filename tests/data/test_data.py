import json
import os
import subprocess
import sys

import pytest

from alpaca_farm_env.data import (
    EVAL_DATASET_COUNTS,
    DataFormatError,
    DataNotFoundError,
    format_prompt,
    load_eval_set,
    load_model_outputs,
    load_preference,
    load_split,
    parse_preference,
    read_records,
    resolve_data_dir,
)


def test_eval_set_counts_and_references(data_dir):
    rows = load_eval_set(data_dir=data_dir)
    assert len(rows) == 805
    counts = {}
    for r in rows:
        counts[r["dataset"]] = counts.get(r["dataset"], 0) + 1
    assert counts == {"selfinstruct": 252, "oasst": 188, "koala": 156, "helpful_base": 129, "vicuna": 80}
    assert counts == EVAL_DATASET_COUNTS
    assert sum(1 for r in rows if r["input"]) == 208
    b = load_eval_set("alpacaeval1", data_dir)
    assert [(r["instruction"], r["input"]) for r in b] == [(r["instruction"], r["input"]) for r in rows]
    # (A) and (B) are different davinci003 samples: only 27 of 805 outputs coincide (shared/data/README.md)
    assert sum(a["reference_output"] == x["reference_output"] for a, x in zip(rows, b)) == 27
    with pytest.raises(ValueError, match="unknown reference"):
        load_eval_set("davinci", data_dir)


def test_prompt_template_exact():
    assert format_prompt("Give three tips for staying healthy.") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nGive three tips for staying healthy.\n\n### Response:"
    )
    assert format_prompt("Translate to French.", "Good morning {name}") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate to French."
        "\n\n### Input:\nGood morning {name}\n\n### Response:"
    )


def test_prompt_on_real_eval_rows(data_dir):
    rows = load_eval_set(data_dir=data_dir)
    with_input = next(r for r in rows if r["input"])
    p = format_prompt(with_input["instruction"], with_input["input"])
    assert p.endswith(f"### Input:\n{with_input['input']}\n\n### Response:")
    assert "paired with an input" in p
    no_input = next(r for r in rows if not r["input"])
    assert format_prompt(no_input["instruction"]).endswith(f"### Instruction:\n{no_input['instruction']}\n\n### Response:")


def test_splits_are_disjoint_from_eval_and_each_other(data_dir):
    eval_keys = {(r["instruction"], r["input"]) for r in load_eval_set(data_dir=data_dir)}
    seen = {}
    for split in ("sft", "preference", "unlabeled", "val"):
        rows = load_split(split, data_dir)
        assert rows, split
        keys = {(r["instruction"], r["input"]) for r in rows}
        assert not keys & eval_keys, f"{split} overlaps the eval set"
        for other, okeys in seen.items():
            assert not keys & okeys, f"{split} overlaps {other}"
        seen[split] = keys
    assert len(load_split("val", data_dir)) == 2000
    # the 5k sample (minus val rows) is partitioned 1:2:2 like AlpacaFarm's 10k/20k/20k
    n = {s: len(load_split(s, data_dir)) for s in ("sft", "preference", "unlabeled")}
    assert sum(n.values()) == 5000 - 154
    assert 0.15 < n["sft"] / sum(n.values()) < 0.25
    val = load_split("val", data_dir)
    assert sum(1 for r in val if r["input"]) == 762


def test_preference_offline_substitute(data_dir):
    rows = load_preference("alpaca_gpt4_preference", data_dir)
    assert len(rows) == 648 - 321
    assert {r["preference"] for r in rows} <= {1.0, 2.0, 1.5}
    with pytest.raises(DataNotFoundError, match="no offline copy"):
        load_preference("alpaca_human_preference", data_dir)


def test_parse_preference_encoding():
    assert parse_preference("2") == 2.0
    assert parse_preference(0) == 1.5  # legacy draw
    assert parse_preference(1.25) == 1.25
    assert parse_preference(None) is None and parse_preference(float("nan")) is None
    with pytest.raises(DataFormatError, match="outside"):
        parse_preference(3)


def _write(tmp_path, rows, name="bad.json"):
    p = tmp_path / name
    p.write_text(rows if isinstance(rows, str) else json.dumps(rows))
    return p


GOOD = {"instruction": "Say hi", "input": "", "output": "hi"}


@pytest.mark.parametrize(
    "rows, match",
    [
        ([GOOD, {"instruction": "x", "input": "", "output": 3}], r"row 1, field 'output': expected str, got int"),
        ([GOOD, {"instruction": "x", "output": "y"}], r"row 1, field 'input': missing field"),
        ([GOOD, dict(GOOD)], r"row 1, field 'instruction': duplicate instruction\+input \(first seen at row 0\)"),
        ([GOOD, {"instruction": "  ", "input": "", "output": "y"}], r"row 1, field 'instruction': empty value"),
        ('[{"instruction": "x",', r"invalid JSON at line 1"),
        ({"instruction": "x"}, r"expected a JSON list"),
    ],
    ids=["wrong-type", "missing-field", "duplicate", "empty-instruction", "invalid-json", "not-a-list"],
)
def test_malformed_files_name_file_row_field(tmp_path, rows, match):
    path = _write(tmp_path, rows)
    with pytest.raises(DataFormatError, match=match) as e:
        read_records(path, {"instruction": str, "input": str, "output": str}, unique=("instruction", "input"))
    assert str(path) in str(e.value)


def test_malformed_data_dir_loads_nothing(tmp_path):
    # a data dir whose eval file has one bad row: the loader raises and returns nothing partial
    d = tmp_path / "data" / "alpacafarm_eval"
    d.mkdir(parents=True)
    rows = [dict(GOOD, dataset="koala"), {"instruction": "x", "input": "", "output": None, "dataset": "koala"}]
    (d / "alpacafarm_paper_reference_text_davinci_003.json").write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match=r"row 1, field 'output'"):
        load_eval_set(data_dir=tmp_path / "data")


def test_model_outputs_duplicate_and_lookup(tmp_path, data_dir):
    rows = load_model_outputs("alpaca-7b", data_dir)
    assert len(rows) == 805 and all("input" in r for r in rows)
    p = _write(tmp_path, [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": "c"}])
    with pytest.raises(DataFormatError, match="duplicate"):
        load_model_outputs(p)
    with pytest.raises(DataNotFoundError):
        load_model_outputs("no-such-model", data_dir)


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPACA_FARM_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(tmp_path / ".") == tmp_path / "."
    with pytest.raises(DataNotFoundError, match="does not exist"):
        resolve_data_dir(tmp_path / "missing")
    monkeypatch.delenv("ALPACA_FARM_DATA_DIR")
    assert resolve_data_dir() is None  # -> the Hugging Face hub


def test_cli_data_command(data_dir):
    out = subprocess.run(
        [sys.executable, "-m", "alpaca_farm_env.cli", "data", "--json", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=True, env={**os.environ},
    ).stdout
    info = json.loads(out)
    assert info["eval"]["n"] == 805 and info["eval"]["by_dataset"]["koala"] == 156
    assert info["splits"]["val"]["n"] == 2000
