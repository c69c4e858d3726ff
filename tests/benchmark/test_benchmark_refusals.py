"""The benchmark never reports a wrong or thinner number with exit 0: every setting is checked before any work, a
user's agent that breaks its contract is named (exit 2, the user's fault), a run dir belongs to one preset, and a
cached rerun reports exactly what the first run did."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

from alpaca_farm_env.benchmark.config import load_preset
from alpaca_farm_env.cli import main
from alpaca_farm_env.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_EVAL = 3


def _cfg(**methods) -> dict:
    cfg = load_preset("tiny").to_dict()
    cfg.update(policy="tiny-llama", annotator="longer", n_eval=N_EVAL, name="refusals", compare_to=None)
    cfg["generation"].update(max_new_tokens=4, batch_size=3)
    cfg["methods"] = methods or {"base": {}}
    return cfg


def _write(tmp_path: Path, cfg: dict, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _run(capsys, preset, run_dir, *extra) -> tuple[int, str, str]:
    rc = main(["benchmark", "--preset", str(preset), "--run-dir", str(run_dir), "--no-progress", *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------------------------------------ settings, before work
@pytest.mark.parametrize("mutate, words", [
    (lambda c: c["methods"]["ppo"]["config"].update(total_steps=-2), "total_steps: must be >= 1, got -2"),
    (lambda c: c["methods"]["ppo"]["config"].update(kl_coeff=0.1), "did you mean 'kl_coef'"),
    (lambda c: c["methods"]["ppo"]["config"].update(kl_coef="high"), "kl_coef: expected a number"),
    (lambda c: c["methods"]["ppo"].update(confg={}), "did you mean 'config'"),
    (lambda c: c["methods"]["ppo"].update(reward="length", reward_kwargs={"bogus": 1}), "reward_kwargs.bogus"),
    (lambda c: c["stages"].update(preferences={"annotator": "noisy_poold"}), "stages.preferences.annotator"),
    (lambda c: c["stages"].update(reward_model={"n_eval": -1}), "n_eval: must be >= 0"),
    (lambda c: c["stages"]["sft"].update(max_lenght=8), "did you mean 'max_length'"),
    (lambda c: c.update(n_eval=806), "806 is more than the 805 eval instructions"),
])
def test_bad_settings_exit_2_before_any_stage(tmp_path, capsys, mutate, words):
    cfg = _cfg(sft={}, ppo={"config": {"total_steps": 2}})
    mutate(cfg)
    run_dir = tmp_path / "run"
    rc, _, err = _run(capsys, _write(tmp_path, cfg), run_dir)
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (run_dir / "stages").exists() and not (run_dir / "config.json").exists()


def test_an_empty_preset_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    rc, _, err = _run(capsys, empty, tmp_path / "run")
    assert rc == 2 and "the preset is empty" in err
    assert not (tmp_path / "run").exists()


def test_env_arguments_are_checked_when_the_env_is_made():
    with pytest.raises(ConfigError, match="max_examples must be an integer"):
        gym.make("AlpacaFarm-v0", max_examples=2.5)
    with pytest.raises(ConfigError, match="max_examples must be an integer"):
        gym.make("AlpacaFarm-v0", max_examples="3")
    with pytest.raises(ConfigError, match="reward_kwargs.bogus"):  # at gym.make, not at the first step()
        gym.make("AlpacaFarm-v0", reward="length", reward_kwargs={"bogus": 1})
    with pytest.raises(ConfigError, match="did you mean 'base_seed'"):
        gym.make("AlpacaFarm-v0", reward="annotator", reward_kwargs={"annotator": "pooled", "basse_seed": 1})


def test_dry_run_prints_the_plan_and_builds_nothing(tmp_path, capsys):
    cfg = _cfg(sft={}, best_of_n={"n": 2})
    run_dir = tmp_path / "run"
    rc, out, err = _run(capsys, _write(tmp_path, cfg), run_dir, "--dry-run")
    assert rc == 0, err
    assert "stage       sft" in out and "build" in out and "reward_model" in out
    assert f"{N_EVAL} instructions" in out and "method      best_of_n" in out and "0/3 outputs cached" in out
    assert not run_dir.exists()


# ------------------------------------------------------------------------------------------ a user's agent
AGENTS_PY = textwrap.dedent('''
    class _Base:
        name = "user"
        ENVS = {}
        STAGES = ()

        def __init__(self, policy=None, **kwargs):
            self.policy = policy

        def fit(self, envs, **stages):
            pass


    class ReturnsNone(_Base):
        def respond(self, observations):
            return [None for _ in observations]


    class TooFew(_Base):
        def respond(self, observations):
            return ["x"] * (len(observations) - 1)


    class Raises(_Base):
        def respond(self, observations):
            raise RuntimeError("my agent broke")


    class NoPolicy:
        name = "nopolicy"
        ENVS = {}
        STAGES = ()

        def __init__(self, *, n=1):
            pass

        def fit(self, envs, **stages):
            pass

        def respond(self, observations):
            return ["x"] * len(observations)
''')


@pytest.fixture
def user_agents(tmp_path, monkeypatch):
    (tmp_path / "my_agents.py").write_text(AGENTS_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_agents"


@pytest.mark.parametrize("cls, words", [
    ("ReturnsNone", "returned None (NoneType), not a string, for eval row"),
    ("TooFew", "returned 2 responses for 3 observations"),
    ("Raises", "error in your code at"),
    ("NoPolicy", "takes no 'policy' argument"),
])
def test_a_broken_user_agent_exits_2_naming_it(tmp_path, capsys, user_agents, cls, words):
    cfg = _cfg(mine={"agent": f"{user_agents}:{cls}"})
    run_dir = tmp_path / "run"
    rc, _, err = _run(capsys, _write(tmp_path, cfg), run_dir)
    assert rc == 2 and words in err, err
    if cls == "Raises":
        assert "my_agents.py" in err and "my agent broke" in err  # the user's own frame
    else:
        assert "mine" in err or "'my_agents:NoPolicy'" in err
    assert not (run_dir / "results.json").exists()
    outputs = run_dir / "mine" / "generations.jsonl"
    assert not outputs.exists() or outputs.read_text() == ""  # nothing of it was cached or scored


MINIMAL_AGENTS_PY = textwrap.dedent('''
    class Minimal:
        """Only what the protocol requires of a user's agent: name, ENVS, STAGES, fit, respond."""
        name = "minimal"
        ENVS = {}
        STAGES = ()
        built = []

        def __init__(self, policy=None, **settings):
            self.settings = settings
            self.before_fit = None
            Minimal.built.append(self)

        def fit(self, envs, **stages):
            self.before_fit = {"evaluator": self.evaluator, "eval_hook": self.eval_hook, "history": self.history,
                               "describe": self.describe()}

        def respond(self, observations):
            return ["an answer " * (len(o["instruction"]) % 13) for o in observations]  # some beat Davinci003


    class DeclaresGeneration(Minimal):
        GENERATION_KEYS = ("max_new_tokens", "seed")
''')


def test_a_minimal_user_agent_gets_the_protocol_members_and_its_declared_generation_settings(
        tmp_path, capsys, monkeypatch):
    (tmp_path / "minimal_agents.py").write_text(MINIMAL_AGENTS_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _cfg(mine={"agent": "minimal_agents:Minimal"}, declared={"agent": "minimal_agents:DeclaresGeneration"})
    run_dir = tmp_path / "run"
    rc, _, err = _run(capsys, _write(tmp_path, cfg), run_dir)
    assert rc == 0, err
    import minimal_agents

    mine, declared = minimal_agents.Minimal.built
    # set by the benchmark before fit: the evaluator, the win-rate hook, and the defaults of what the agent lacks
    assert mine.before_fit["evaluator"] == "longer" and callable(mine.before_fit["eval_hook"])
    assert mine.before_fit["history"] == [] and mine.before_fit["describe"] == {}
    # generation settings only where the class declares them (GENERATION_KEYS), never by its signature
    assert mine.settings == {} and declared.settings == {"max_new_tokens": 4, "seed": 0}
    res = json.loads((run_dir / "results.json").read_text())
    by = {m["method"]: m for m in res["methods"]}
    assert by["mine"]["reward"] is None and "max_new_tokens" not in by["mine"]["settings"]
    assert 0 < by["mine"]["metrics"]["win_rate"] < 100  # "longer": some answers win, some lose
    # the training-time hook judges val instructions (never the test set), as the checkpoint selection judges them
    seen = []
    respond = mine.respond
    mine.respond = lambda obs: seen.extend(obs) or respond(obs)
    hooked = mine.eval_hook(mine)
    from alpaca_farm_env.benchmark.runner import RL_EVAL_ROWS
    from alpaca_farm_env.benchmark.scoring import EvalScorer, EvalSplit

    env = gym.make("AlpacaFarm-v0", split="val", reward="length", shuffle=False)
    val_rows = {r["instruction"] + r["input"]: r for r in env.unwrapped.rows}
    env.close()
    rows = [val_rows[o["instruction"] + o["input"]] for o in seen]  # KeyError: an instruction not of val
    eval_outputs = [json.loads(line) for line in (run_dir / "mine" / "generations.jsonl").read_text().splitlines()]
    assert eval_outputs and not {o["instruction"] for o in seen} & {g["instruction"] for g in eval_outputs}
    val = EvalSplit("alpacafarm", None, {"annotator": "longer", "seed": 0}, split="val")
    expected = EvalScorer(val, rows).win_rate(respond(seen))
    assert hooked["eval_win_rate"] == expected["win_rate"]


def test_a_bug_in_the_package_still_exits_1_with_its_traceback(tmp_path, capsys, monkeypatch):
    import alpaca_farm_env.benchmark.runner as runner

    # a call with the wrong arguments, made inside the package: the error's deepest frame is ours
    monkeypatch.setattr(runner, "eval_instructions", runner.check_responses)
    with pytest.raises(TypeError):
        _run(capsys, _write(tmp_path, _cfg(base={})), tmp_path / "run")


# ------------------------------------------------------------------------------------------ run dirs and reruns
@pytest.mark.slow
def test_a_run_dir_belongs_to_one_preset(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "shared"
    first = _cfg(base={})
    rc, _, err = _run(capsys, _write(tmp_path, first, "a.yaml"), run_dir)
    assert rc == 0, err
    other = _cfg(base={})
    other.update(name="other", n_eval=2)
    rc, _, err = _run(capsys, _write(tmp_path, other, "b.yaml"), run_dir)
    assert rc == 2 and "'refusals'" in err and "'other'" in err and "n_eval" in err and "--force" in err
    assert json.loads((run_dir / "config.json").read_text())["name"] == "refusals"  # untouched
    rc, _, err = _run(capsys, _write(tmp_path, other, "b.yaml"), run_dir, "--force")
    assert rc == 0, err
    board = json.loads((tmp_path / "runs" / "leaderboard.json").read_text())
    assert [(r["preset"], r["n"]) for r in board] == [("other", 2)]  # the replaced run's row is gone
    # the same preset with another method is the same run: accepted, and both methods' rows are kept
    more = dict(other, methods={"sft": {}})
    rc, _, err = _run(capsys, _write(tmp_path, more, "c.yaml"), run_dir)
    assert rc == 0, err
    assert sorted(r["method"] for r in json.loads((tmp_path / "runs" / "leaderboard.json").read_text())) == [
        "base", "sft"]
