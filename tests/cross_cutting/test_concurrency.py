"""Two runs sharing a directory lose nothing: concurrent atomic writes of one file never crash or tear it, two
leaderboard updates at once keep both rows, and two `alpaca-farm evaluate` processes writing into one output
directory both finish with their own, complete annotations."""
from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_farm_env.benchmark import leaderboard
from alpaca_farm_env.data import load_eval_set
from alpaca_farm_env.utils import atomic_write_text

CTX = mp.get_context("fork")  # both workers start from this process at once: the tightest race


def _writer(path: str, tag: str, n: int, go, errors) -> None:
    go.wait()
    try:
        for i in range(n):
            atomic_write_text(path, json.dumps({"tag": tag, "i": i, "pad": "x" * 20000}))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the test
        errors.put(repr(e))


def _adder(root: str, tag: str, n: int, go, errors) -> None:
    go.wait()
    try:
        for i in range(n):
            leaderboard.add_run(root, {
                "run_dir": f"{root}/{tag}-{i}", "preset": "t", "created": "now", "policy": "p", "evaluator": "longer",
                "reference": "alpacafarm", "methods": [{"method": "sft", "label": "sft", "metrics": {
                    "n_total": 1, "win_rate": 50.0, "standard_error": None, "avg_length": 1.0}}]})
    except Exception as e:  # noqa: BLE001
        errors.put(repr(e))


def _race(target, args_a, args_b) -> list[str]:
    go, errors = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=target, args=(*a, go, errors)) for a in (args_a, args_b)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    out = []
    while not errors.empty():
        out.append(errors.get())
    return out


def test_concurrent_atomic_writes_of_one_file(tmp_path):
    path = tmp_path / "shared.json"
    assert _race(_writer, (str(path), "a", 200), (str(path), "b", 200)) == []
    final = json.loads(path.read_text())
    assert final["i"] == 199 and final["tag"] in {"a", "b"}
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]  # no temp file left behind


@pytest.mark.parametrize("trial", range(3))
def test_two_runs_updating_one_leaderboard_keep_every_row(tmp_path, trial):
    """The benchmark's last step is ``leaderboard.add_run``; without the lock, about one row in three was lost."""
    n = 40
    assert _race(_adder, (str(tmp_path), "a", n), (str(tmp_path), "b", n)) == []
    rows = leaderboard.load_leaderboard(tmp_path)
    assert len(rows) == 2 * n
    assert {r["run_dir"] for r in rows} == {f"{tmp_path}/{t}-{i}" for t in "ab" for i in range(n)}


def _evaluate_proc(outputs: Path, out_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "alpaca_farm_env.cli", "evaluate", "--model-outputs", str(outputs), "--annotator",
         "longer", "--output-dir", str(out_dir), "--json", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_two_evaluations_into_one_directory(data_dir, tmp_path, trial):
    """Two processes, one --output-dir: the same model twice, and two models. Every process exits 0, and each
    reported annotations file holds that model's 805 judgments."""
    ev = load_eval_set("alpacafarm", data_dir)
    files = {}
    for name, extra in (("m1", " and then some more words"), ("m2", "")):
        rows = [{"instruction": e["instruction"], "input": e["input"], "output": e["reference_output"][:50] + extra,
                 "generator": "model"} for e in ev]
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(rows))
    out_dir = tmp_path / "out"
    for pair in ((files["m1"], files["m1"]), (files["m1"], files["m2"])):
        procs = [_evaluate_proc(f, out_dir) for f in pair]
        results = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr
            results.append(json.loads(stdout))
        for f, res in zip(pair, results):
            stored = json.loads(Path(res["annotations_path"]).read_text())
            assert len(stored) == 805 and res["n_total"] == 805
            assert [r["output_2"] for r in stored] == [o["output"] for o in json.loads(f.read_text())]
    assert not list(out_dir.glob("*.tmp"))


def test_a_second_benchmark_in_a_busy_run_dir_is_refused(tmp_path, capsys):
    """One run at a time per run dir: while a lock holder (another benchmark) runs, a second one exits 2 at once,
    naming the run dir, and writes nothing there."""
    import yaml

    from alpaca_farm_env.benchmark.config import load_preset
    from alpaca_farm_env.cli import main
    from alpaca_farm_env.utils import file_lock

    cfg = load_preset("tiny").to_dict()
    cfg.update(policy="tiny-llama", annotator="longer", n_eval=2, name="t")
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    go, held = CTX.Event(), CTX.Event()

    def holder():
        with file_lock(run_dir / "run"):
            held.set()
            go.wait(60)

    p = CTX.Process(target=holder)
    p.start()
    try:
        assert held.wait(60)
        rc = main(["benchmark", "--preset", str(preset), "--run-dir", str(run_dir), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and str(run_dir) in err and "another benchmark is running" in err
        assert sorted(x.name for x in run_dir.iterdir()) == ["run.lock"]
    finally:
        go.set()
        p.join(60)
