"""``alpaca-farm evaluate`` never gives a wrong number with exit 0: rows it does not evaluate never enter the
win-rate, files that contradict each other are refused (exit 2, naming the file and rows), and two models evaluated
into one directory keep their own annotations."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from alpaca_farm_env.cli import main
from alpaca_farm_env.data import list_annotated_models, load_eval_set


def _ann_path(data_dir: Path, model: str) -> Path:
    return data_dir / "alpaca_eval_results" / model / "alpaca_eval_gpt4" / "annotations.json"


def _evaluate(capsys, *argv):
    rc = main(["evaluate", *argv, "--json", "--no-progress"])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 else None), out.err


@pytest.fixture(scope="module")
def two_models(data_dir):
    models = list_annotated_models(data_dir)
    return models[0], models[-1]


def test_concatenated_models_are_refused(data_dir, tmp_path, two_models, capsys):
    a, b = (json.loads(_ann_path(data_dir, m).read_text()) for m in two_models)
    both = tmp_path / "both.json"
    both.write_text(json.dumps(a + b))
    rc, _, err = _evaluate(capsys, "--annotations", str(both))
    assert rc == 2
    assert str(both) in err and "rows 0 and 805" in err and "mixes models" in err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line


def test_duplicates_and_rows_outside_the_eval_set_are_not_counted(data_dir, tmp_path, two_models, capsys):
    path = _ann_path(data_dir, two_models[0])
    rc, alone, _ = _evaluate(capsys, "--annotations", str(path))
    assert rc == 0 and alone["n_total"] == 805
    rows = json.loads(path.read_text())
    stranger = dict(rows[0], instruction="An instruction that is not in the eval set.", preference=2)
    padded = tmp_path / "padded.json"
    padded.write_text(json.dumps(rows + rows[:100] + [stranger] * 50))  # 100 exact duplicates, 50 non-eval rows
    rc, res, err = _evaluate(capsys, "--annotations", str(padded))
    assert rc == 0
    assert res["n_total"] == 805 and res["win_rate"] == pytest.approx(alone["win_rate"])
    assert res["n_duplicates"] == 100 and res["n_extra"] == 50
    assert "counted once" in err and "not in the 'alpacaeval1' eval set" in err


def test_rows_against_another_baseline_are_left_out(data_dir, tmp_path, two_models, capsys):
    rows = json.loads(_ann_path(data_dir, two_models[0]).read_text())
    for r in rows[:5]:
        r["output_1"] = "Some other baseline's answer."
        r["preference"] = 2
    f = tmp_path / "mixed_baseline.json"
    f.write_text(json.dumps(rows))
    rc, res, err = _evaluate(capsys, "--annotations", str(f))
    assert rc == 0 and res["n_total"] == 800 and res["n_off_reference"] == 5
    assert "not the 'alpacaeval1' Davinci003 reference" in err


def test_zero_reference_matches_is_an_error(data_dir, tmp_path, two_models, capsys):
    rows = json.loads(_ann_path(data_dir, two_models[0]).read_text())
    for r in rows:
        r["output_1"] = "not davinci"
    f = tmp_path / "no_ref.json"
    f.write_text(json.dumps(rows))
    for extra in ([], ["--reference", "alpacafarm"]):
        rc, _, err = _evaluate(capsys, "--annotations", str(f), *extra)
        assert rc == 2 and str(f) in err and "in none of its 805 rows" in err


def test_model_outputs_must_match_the_judged_outputs(data_dir, tmp_path, two_models, capsys):
    a, b = two_models
    ann = _ann_path(data_dir, a)
    rc, res, _ = _evaluate(capsys, "--annotations", str(ann), "--model-outputs", a)  # its own outputs: fine
    assert rc == 0 and res["n_total"] == 805
    rc, _, err = _evaluate(capsys, "--annotations", str(ann), "--model-outputs", b)
    assert rc == 2 and "does not match" in err and str(ann) in err and b in err


@pytest.mark.parametrize("content", [[], [{"instruction": "Not an eval instruction.", "output": "x"}]])
def test_nothing_to_evaluate_is_an_error(tmp_path, content, capsys):
    f = tmp_path / "outputs.json"
    f.write_text(json.dumps(content))
    rc, _, err = _evaluate(capsys, "--model-outputs", str(f), "--annotator", "longer", "--output-dir", str(tmp_path / "o"))
    assert rc == 2 and str(f) in err and "nothing to evaluate" in err
    g = tmp_path / "annotations.json"
    g.write_text(json.dumps([]))
    rc, _, err = _evaluate(capsys, "--annotations", str(g))
    assert rc == 2 and str(g) in err and "nothing to evaluate" in err


def test_all_unlabeled_is_an_error(data_dir, tmp_path, two_models, capsys):
    rows = json.loads(_ann_path(data_dir, two_models[0]).read_text())
    for r in rows:
        r["preference"] = None
    f = tmp_path / "unlabeled.json"
    f.write_text(json.dumps(rows))
    rc, _, err = _evaluate(capsys, "--annotations", str(f))
    assert rc == 2 and "unlabeled" in err and str(f) in err


def _outputs(ev, n, suffix, generator):
    return [{"instruction": e["instruction"], "input": e["input"], "output": e["reference_output"][: 20 * (i % 3)] + suffix,
             "generator": generator} for i, e in enumerate(ev[:n])]


def test_two_models_into_one_output_dir_keep_their_own_annotations(data_dir, tmp_path, capsys):
    ev = load_eval_set("alpacafarm", data_dir)
    out = tmp_path / "shared_out"
    results = {}
    for name, suffix in (("m1", " A much longer answer than the reference. " * 20), ("m2", "")):
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(_outputs(ev, 12, suffix, "model")))  # same generator name on purpose
        rc, res, err = _evaluate(capsys, "--model-outputs", str(f), "--annotator", "longer", "--output-dir", str(out))
        assert rc == 0, err
        results[name] = (res, json.loads(f.read_text()))
    assert results["m1"][0]["annotations_path"] != results["m2"][0]["annotations_path"]
    for res, outs in results.values():
        stored = json.loads(Path(res["annotations_path"]).read_text())
        assert [r["output_2"] for r in stored] == [o["output"] for o in outs]
    assert results["m1"][0]["win_rate"] > results["m2"][0]["win_rate"]


def test_malformed_cache_rows_are_annotated_again(data_dir, tmp_path, capsys, caplog):
    ev = load_eval_set("alpacafarm", data_dir)
    f = tmp_path / "m.json"
    f.write_text(json.dumps(_outputs(ev, 6, " extra words", "m")))
    rc, first, _ = _evaluate(capsys, "--model-outputs", str(f), "--annotator", "longer", "--output-dir", str(tmp_path / "o"))
    assert rc == 0
    cache = Path(first["annotations_path"])
    rows = json.loads(cache.read_text())
    rows[0]["preference"] = "most certainly"
    del rows[1]["key"]
    cache.write_text(json.dumps(rows))
    rc, again, _ = _evaluate(capsys, "--model-outputs", str(f), "--annotator", "longer", "--output-dir", str(tmp_path / "o"))
    assert rc == 0 and again["n_from_cache"] == 4 and again["win_rate"] == first["win_rate"]
    assert any(str(cache) in r.getMessage() and "malformed" in r.getMessage() for r in caplog.records)
    cache.write_text("[{\"trunc")  # a torn file: warned about, then annotated again
    rc, third, _ = _evaluate(capsys, "--model-outputs", str(f), "--annotator", "longer", "--output-dir", str(tmp_path / "o"))
    assert rc == 0 and third["n_from_cache"] == 0 and third["win_rate"] == first["win_rate"]


def test_output_dir_that_is_a_file_and_cache_that_is_a_directory(data_dir, tmp_path, capsys):
    ev = load_eval_set("alpacafarm", data_dir)
    f = tmp_path / "m.json"
    f.write_text(json.dumps(_outputs(ev, 3, "", "m")))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, _, err = _evaluate(capsys, "--model-outputs", str(f), "--annotator", "longer", "--output-dir", str(blocker))
    assert rc == 2 and str(blocker) in err and "Traceback" not in err
    rc, res, _ = _evaluate(capsys, "--model-outputs", str(f), "--annotator", "longer", "--output-dir", str(tmp_path / "o"))
    cache = Path(res["annotations_path"])
    cache.unlink()
    cache.mkdir()
    rc, _, err = _evaluate(capsys, "--model-outputs", str(f), "--annotator", "longer", "--output-dir", str(tmp_path / "o"))
    assert rc == 2 and str(cache) in err and "directory" in err
