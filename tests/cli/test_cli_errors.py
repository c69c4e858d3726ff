"""The CLI's error boundary: a user error is one line on stderr naming the file, row or key, with exit code 2, and
it comes before any work; a bug keeps its traceback. Covers preset validation and the leaderboard file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alpaca_farm_env.benchmark import leaderboard
from alpaca_farm_env.benchmark.config import load_preset
from alpaca_farm_env.cli import main


def _preset(tmp_path: Path, **changes) -> Path:
    cfg = load_preset("tiny").to_dict()
    cfg.update(policy="tiny-llama", annotator="longer", n_eval=2, name="t", runs_root=str(tmp_path / "runs"))
    cfg["generation"].update(max_new_tokens=4, batch_size=2)
    cfg["methods"] = {"sft": {}, "best_of_n": {"n": 4, "temperature": 1.0, "reward": "length"}}
    for dotted, value in changes.items():
        node, *path = dotted.split("__")
        target = cfg
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = value
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _fails(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"alpaca-farm {argv[0]}: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    "changes, key, shown",
    [
        ({"annotator": "poled"}, "annotator", "'poled'"),
        ({"generation__temperature": "hot"}, "generation.temperature", "'hot'"),
        ({"generation__batch_size": 0}, "generation.batch_size", ">= 1"),
        ({"n_eval": 8.7}, "n_eval", "8.7"),
        ({"policy": 5}, "policy", "5"),
        ({"methods__best_of_n__reward": "lenght"}, "methods.best_of_n.reward", "'lenght'"),
        ({"methods__best_of_n__n": "four"}, "methods.best_of_n.n", "'four'"),
        ({"methods__best_of_n__temperature": True}, "methods.best_of_n.temperature", "True"),
        ({"reference": "davinci"}, "reference", "'davinci'"),
        ({"generation__top_p": 1.5}, "generation.top_p", "(0, 1]"),
    ],
)
def test_bad_preset_fails_before_any_work(tmp_path, capsys, changes, key, shown):
    preset = _preset(tmp_path, **changes)
    _fails(capsys, ["benchmark", "--preset", str(preset), "--no-progress"], str(preset), key + ":", shown)
    assert not (tmp_path / "runs").exists()  # no run dir, no generation, no leaderboard


def test_bad_command_line_override_names_the_flag(tmp_path, capsys):
    preset = _preset(tmp_path)
    _fails(capsys, ["benchmark", "--preset", str(preset), "--annotator", "nope", "--no-progress"],
           "--annotator", "annotator:", "'nope'")
    _fails(capsys, ["benchmark", "--preset", str(preset), "--n-eval", "0", "--no-progress"], "--n-eval", "n_eval:")
    _fails(capsys, ["benchmark", "--preset", str(preset), "--methods", "sft,bestofn", "--no-progress"],
           "--methods", "methods.bestofn:")
    assert not (tmp_path / "runs").exists()


def test_unknown_preset_key_and_bad_yaml(tmp_path, capsys):
    preset = _preset(tmp_path, temprature=0.5)
    _fails(capsys, ["benchmark", "--preset", str(preset)], str(preset), "'temprature'")
    preset.write_text("name: [unclosed\n")
    _fails(capsys, ["benchmark", "--preset", str(preset)], str(preset), "invalid YAML")
    _fails(capsys, ["benchmark", "--preset", str(tmp_path / "missing.yaml")], "missing.yaml")


def _row(i: int) -> dict:
    return {"run_dir": f"runs/r{i}", "preset": "t", "created": "x", "method": "sft", "label": "sft", "reward": None,
            "policy": "p", "evaluator": "longer", "reference": "alpacafarm", "n": 2, "win_rate": 50.0,
            "standard_error": 1.0, "avg_length": 3.0, "baseline": None, "win_rate_vs_baseline": None,
            "standard_error_vs_baseline": None}


def _results(run_dir: str) -> dict:
    return {"run_dir": run_dir, "preset": "t", "created": "now", "policy": "p", "evaluator": "longer",
            "reference": "alpacafarm", "methods": [{"method": "sft", "label": "sft", "metrics": {
                "n_total": 2, "win_rate": 50.0, "standard_error": 10.0, "avg_length": 4.0}}]}


def test_leaderboard_that_is_not_a_list_is_never_overwritten(tmp_path, capsys):
    path = tmp_path / "leaderboard.json"
    original = json.dumps({"rows": [_row(i) for i in range(4)]})
    path.write_text(original)
    _fails(capsys, ["leaderboard", "--runs-root", str(tmp_path)], str(path), "expected a JSON list")
    with pytest.raises(ValueError, match="not overwritten"):
        leaderboard.add_run(tmp_path, _results("runs/new"))
    assert path.read_text() == original  # the 4 rows are still there
    # a benchmark refuses before generating anything
    preset = _preset(tmp_path, runs_root=str(tmp_path))
    _fails(capsys, ["benchmark", "--preset", str(preset), "--no-progress"], str(path))
    assert path.read_text() == original and not list(tmp_path.glob("t-*"))


@pytest.mark.parametrize("bad, where", [
    ([_row(0), "a string"], "row 1"),
    ([_row(0), {k: v for k, v in _row(1).items() if k != "method"}], "row 1, field 'method'"),
    ([dict(_row(0), win_rate="high")], "row 0, field 'win_rate'"),
])
def test_malformed_leaderboard_rows_name_the_row(tmp_path, capsys, bad, where):
    (tmp_path / "leaderboard.json").write_text(json.dumps(bad))
    _fails(capsys, ["leaderboard", "--runs-root", str(tmp_path)], str(tmp_path / "leaderboard.json"), where)


def test_leaderboard_upsert_keeps_other_rows(tmp_path):
    leaderboard.add_run(tmp_path, _results("runs/a"))
    leaderboard.add_run(tmp_path, _results("runs/b"))
    leaderboard.add_run(tmp_path, _results("runs/a"))  # a resumed run replaces its own row
    assert sorted(r["run_dir"] for r in leaderboard.load_leaderboard(tmp_path)) == ["runs/a", "runs/b"]


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """KeyError is no longer caught wholesale: a bug in a command surfaces with its traceback (exit 1 from the
    console script), it is not turned into a one-line 'user error'."""
    import alpaca_farm_env.benchmark.leaderboard as lb

    # a genuine programming error inside the package: one of its functions called with the wrong arguments (a
    # function defined here would be the caller's own code, which exits 2 naming its frame)
    monkeypatch.setattr(lb, "format_leaderboard", lb.leaderboard_path)
    with pytest.raises(TypeError):
        main(["leaderboard", "--runs-root", str(tmp_path)])


def test_an_error_in_the_users_code_names_its_frame(monkeypatch, tmp_path, capsys):
    """The same failure raised from a function of the user's (here, this test file) is the user's to fix: exit 2,
    one line naming the file and line."""
    import alpaca_farm_env.benchmark.leaderboard as lb

    def broken(rows, paper, source):
        return {}["missing"]

    monkeypatch.setattr(lb, "format_leaderboard", broken)
    assert main(["leaderboard", "--runs-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error in your code at" in err and "test_cli_errors.py" in err and "KeyError" in err


def test_unknown_annotator_on_the_command_line(tmp_path, capsys):
    f = tmp_path / "o.json"
    f.write_text("[]")
    _fails(capsys, ["evaluate", "--model-outputs", str(f), "--annotator", "gpt5_judge"], "'gpt5_judge'", "Known:")


def test_malformed_data_file_names_file_row_and_field(tmp_path, capsys):
    f = tmp_path / "outputs.json"
    f.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": 3}]))
    _fails(capsys, ["evaluate", "--model-outputs", str(f)], str(f), "row 1", "'output'")
    d = tmp_path / "a_directory.json"
    d.mkdir()
    err = _fails(capsys, ["evaluate", "--annotations", str(d)], str(d))
    assert "no such file" not in err


def test_api_that_refuses_the_key_is_one_line(tmp_path, monkeypatch, capsys, data_dir):
    """A 401 from an OpenAI-compatible server (a real one on 127.0.0.1) ends the CLI with exit 2 and one line naming
    the endpoint, never the key."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from openai_test_server import ScriptedOpenAIServer

    from alpaca_farm_env.data import load_eval_set

    e = load_eval_set("alpacafarm", data_dir)[0]
    f = tmp_path / "o.json"
    f.write_text(json.dumps([{"instruction": e["instruction"], "input": e["input"], "output": "An answer."}]))
    secret = "sk-wrong-key-0123456789"
    monkeypatch.setenv("ALPACA_FARM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with ScriptedOpenAIServer(api_key="sk-the-right-key") as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        err = _fails(capsys, ["evaluate", "--model-outputs", str(f), "--annotator", "alpaca_farm_greedy_gpt4",
                              "--output-dir", str(tmp_path / "out"), "--no-progress"], "HTTP 401", srv.url)
    assert secret not in err


def test_no_data_dir_and_no_hub_is_one_line(monkeypatch, capsys):
    monkeypatch.delenv("ALPACA_FARM_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ALPACA_FARM_HF_FARM", "no-such-owner/no-such-dataset")
    _fails(capsys, ["data"], "ALPACA_FARM_DATA_DIR", "no-such-owner/no-such-dataset")
