"""Experiment tracking (``report_to``): the SFT loop, PPO and the reward model write TensorBoard event files whose
scalars are the rows of their ``metrics.csv`` (read back with TensorBoard's own ``EventAccumulator``); a bad tracker
name or a missing package is a one-line error before any work; and no key (a run's, a stage's, a method's, an output
dir's, the run dir's) depends on ``report_to``, so turning tracking on reuses every result."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import gymnasium as gym
import pytest
from transformers import TrainerCallback

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.agents import AGENTS, make_agent
from alpaca_farm_env.agents.common import check_output_dir
from alpaca_farm_env.agents.dpo import DPOTrainingConfig, train_dpo
from alpaca_farm_env.agents.ppo import PPOConfig
from alpaca_farm_env.agents.sft import SFTAgent
from alpaca_farm_env.agents.sft_loop import SFTConfig, train_sft
from alpaca_farm_env.benchmark.config import BenchmarkConfig, load_preset
from alpaca_farm_env.benchmark.pipeline import Pipeline
from alpaca_farm_env.benchmark.rundir import check_run_dir_owner, default_run_dir
from alpaca_farm_env.benchmark.runner import _agent_kwargs, _method_key, run_benchmark
from alpaca_farm_env.errors import ConfigError
from alpaca_farm_env.models import load_policy, tiny_llama
from alpaca_farm_env.rewards import register_reward
from alpaca_farm_env.rewards import reward_model as rm
from alpaca_farm_env.rl.trainer import run_key
from alpaca_farm_env.tracking import check_report_to, untracked

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def scalars(folder: Path, once: tuple[str, ...] | None = None) -> dict[str, dict[int, float]]:
    """Every scalar of the event files in ``folder``: tag -> {step: value}, as TensorBoard shows them (events of
    purged steps dropped). Fails if a step appears twice in a tag of ``once`` (None: every tag)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        if once is None or tag in once:
            assert len({e.step for e in events}) == len(events), f"{tag}: a step logged twice: {events}"
        out[tag] = {e.step: e.value for e in events}
    return out


# ------------------------------------------------------------------------------------------------ errors
def test_an_unknown_tracker_is_a_one_line_error_everywhere():
    for make in (lambda: SFTConfig(report_to="tb"), lambda: PPOConfig(report_to="tb"),
                 lambda: DPOTrainingConfig(report_to="tb"), lambda: check_report_to(["tensorboard"])):
        with pytest.raises(ValueError, match=r"report_to: unknown tracker .*choose one of 'none', 'tensorboard'") as e:
            make()
        assert "\n" not in str(e.value)
    # in a preset: the key named, the reward model's config (no __post_init__) included
    with pytest.raises(ConfigError, match=r"stages\.reward_model\.report_to: unknown tracker 'TensorBoard'") as e:
        BenchmarkConfig.from_dict({"methods": {"sft": {}}, "stages": {"reward_model": {"report_to": "TensorBoard"}}})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"<config>: report_to: unknown tracker 'all'"):
        BenchmarkConfig.from_dict({"methods": {"sft": {}}, "report_to": "all"})


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb"])
def test_a_missing_tracker_package_names_its_pip_line(tracker, monkeypatch, tmp_path):
    for module in ("tensorboard", "tensorboardX", "wandb"):  # None in sys.modules: the import system refuses it
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=f"report_to='{tracker}' needs the {tracker} package.*: pip install {tracker}$"):
        check_report_to(tracker, installed=True)
    # a preset fails at its check, before any stage runs
    with pytest.raises(ConfigError, match=rf"methods\.ppo\.config\.report_to: .*pip install {tracker}$"):
        BenchmarkConfig.from_dict({"methods": {"ppo": {"config": {"report_to": tracker}}}})
    # and the SFT loop before it touches the policy
    policy = load_policy("tiny-llama")
    with pytest.raises(ImportError, match=f"pip install {tracker}"):
        train_sft(policy, [("Say hi.\n", "hi")], SFTConfig(report_to=tracker, max_steps=1), tmp_path, progress=False)
    assert not (tmp_path / "model").exists() and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------ keys
TRACKED = {"report_to": "tensorboard", "stages": {"sft": None, "reward_model": {"report_to": "tensorboard"}},
           "methods": {"ppo": {"reward": "length", "config": {"total_steps": 3, "report_to": "tensorboard"}},
                       "dpo": {"config": {"report_to": "wandb"}}}}


def plain(data: dict) -> dict:
    return json.loads(json.dumps(untracked(data)))


def test_report_to_changes_no_key(tmp_path):
    tracked = BenchmarkConfig.from_dict(dict(TRACKED, methods={"ppo": TRACKED["methods"]["ppo"]}))
    bare = BenchmarkConfig.from_dict(plain(dict(TRACKED, methods={"ppo": TRACKED["methods"]["ppo"]})))
    assert bare.report_to == "none" and "report_to" not in bare.methods["ppo"]["config"]
    # the run dir (and a rerun with tracking turned on is the same run)
    assert default_run_dir(tracked, "judge") == default_run_dir(bare, "judge")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(bare.to_dict()))
    check_run_dir_owner(tmp_path / "run", tracked, force=False)
    # a method's outputs, record and fit dir (the given policy is the SFT model: no data is read)
    keys = [_method_key(c, Pipeline(c, tmp_path / "run", None, False, print), "ppo", AGENTS.resolve("ppo"))
            for c in (tracked, bare)]
    assert keys[0][3] == keys[1][3] and keys[0][1] == keys[1][1]
    assert keys[0][0]["config"]["report_to"] == "tensorboard"  # while the agent still gets it
    # an RL run, a reward model, a preference learner's output dir
    assert run_key("ppo", PPOConfig(report_to="tensorboard"), "length", {}, "p", 8, 1) == \
        run_key("ppo", PPOConfig(), "length", {}, "p", 8, 1)
    records = [{"instruction": "i", "input": "", "output_1": "a", "output_2": "b", "preference": 1}]
    assert rm._training_key(records, "x", rm.RewardModelTrainingConfig(report_to="tensorboard")) == \
        rm._training_key(records, "x", rm.RewardModelTrainingConfig())
    check_output_dir(tmp_path / "fit", {"method": "dpo", "config": {"beta": 0.1, "report_to": "tensorboard"}})
    check_output_dir(tmp_path / "fit", {"method": "dpo", "config": {"beta": 0.1, "report_to": "none"}})
    assert "report_to" not in (tmp_path / "fit" / "fit.json").read_text()


def test_the_presets_report_to_reaches_every_stage_and_method(tmp_path):
    cfg = BenchmarkConfig.from_dict({"report_to": "tensorboard", "stages": {"sft": {"max_steps": 2}},
                                     "methods": {"ppo": {"reward": "length"}, "expert_iteration": {},
                                                 "dpo": {"config": {"report_to": "none"}}, "sft": {}}})
    pipeline = Pipeline(cfg, tmp_path, None, False, print)
    kwargs = {m: _agent_kwargs(cfg, pipeline, m, AGENTS.resolve(m)) for m in cfg.methods}
    assert make_agent("ppo", policy=None, **kwargs["ppo"]).config.report_to == "tensorboard"
    assert make_agent("expert_iteration", policy=None, **kwargs["expert_iteration"]).config.sft.report_to == \
        "tensorboard"
    assert make_agent("dpo", **kwargs["dpo"]).config.report_to == "none"  # a method's own value wins
    assert SFTAgent(None, **kwargs["sft"]).sft_config.report_to == "tensorboard"
    assert SFTAgent(None, sft=pipeline.stage_fields("sft")).sft_config.report_to == "tensorboard"
    assert rm.RewardModelTrainingConfig(**pipeline.stage_fields("reward_model")).report_to == "tensorboard"
    # "none" at the top leaves every method's keywords as the preset gives them
    bare = BenchmarkConfig.from_dict({"methods": {"ppo": {"reward": "length", "select": "last"}}})
    ppo = AGENTS.resolve("ppo")
    assert _agent_kwargs(bare, Pipeline(bare, tmp_path, None, False, print), "ppo", ppo) == \
        {**bare.generation.for_agent(ppo), "reward": "length"}


# ------------------------------------------------------------------------------------------------ event files
PAIRS = [(f"Name a fruit ({i}).\n", f"banana {i}") for i in range(8)]
TINY_SFT = {"num_train_epochs": 2, "learning_rate": 3e-3, "warmup_ratio": 0.0, "per_device_batch_size": 2,
            "gradient_accumulation_steps": 1, "max_length": 48, "save_steps": 2, "report_to": "tensorboard"}


class Killed(Exception):
    pass


@pytest.mark.slow
def test_sft_loop_events_are_its_metrics_rows_after_a_resume(tmp_path):
    """A run killed during step 4 (checkpoint at 2, step 3 logged) and resumed: TensorBoard shows every step once,
    with the resumed run's values, as metrics.csv does."""
    cfg = SFTConfig(**TINY_SFT)
    policy = load_policy("tiny-llama")
    calls = [0]

    def kill(module, args, output):
        calls[0] += 1
        if calls[0] == 4:
            raise Killed

    handle = policy.model.register_forward_hook(kill)
    with pytest.raises(Killed):
        train_sft(policy, PAIRS, cfg, tmp_path, progress=False)
    handle.remove()
    assert scalars(tmp_path / "runs" / "sft")["loss"].keys() == {1, 2, 3}
    train_sft(load_policy("tiny-llama"), PAIRS, cfg, tmp_path, progress=False)
    log, events = rows(tmp_path / "metrics.csv"), scalars(tmp_path / "runs" / "sft")
    assert [int(r["step"]) for r in log] == list(range(1, 9))
    assert set(events) == {"loss", "learning_rate", "epoch"}
    for r in log:
        step = int(r["step"])
        assert events["loss"][step] == pytest.approx(float(r["loss"]), rel=1e-6)  # float32 of the CSV's repr
        assert events["learning_rate"][step] == pytest.approx(float(r["learning_rate"]), rel=1e-3)  # CSV: 4 digits
        assert events["epoch"][step] == pytest.approx(float(r["epoch"]), abs=1e-4)
    # the finished run's key ignores report_to: without tracking it is loaded, not refused nor retrained
    summary = train_sft(load_policy("tiny-llama"), PAIRS, SFTConfig(**{**TINY_SFT, "report_to": "none"}), tmp_path)
    assert summary["steps"] == 8 and summary["config"]["report_to"] == "tensorboard"


def lowercase_count(prompts, responses, **row):
    return [float(sum(c.isascii() and c.islower() for c in r)) for r in responses]


register_reward("test_tracking_lowercase", lowercase_count, override=True)


@pytest.mark.slow
def test_ppo_events_are_its_metrics_and_eval_rows(data_dir, tmp_path):
    env = gym.make("AlpacaFarm-v0", split="unlabeled", reward="test_tracking_lowercase", max_examples=40,
                   data_dir=data_dir)
    config = dict(rollout_batch_size=8, step_batch_size=8, rollout_per_device_batch_size=8,
                  step_per_device_batch_size=8, learning_rate=1e-3, warmup_steps=0, query_len=400, response_len=8,
                  total_steps=2, save_steps=2, eval_steps=2, n_eval_prompts=4, seed=1, report_to="tensorboard")
    agent = make_agent("ppo", policy=tiny_llama(seed=0), config=config, max_new_tokens=8)
    agent.fit({"unlabeled": env}, output_dir=str(tmp_path))
    log, events = rows(tmp_path / "metrics.csv"), scalars(tmp_path / "runs" / "ppo")
    assert [r["step"] for r in log] == ["1", "2"]
    columns = [c for c in log[0] if c != "step"]
    assert {"reward_mean", "kl", "policy_loss", "value_loss", "lr", "seconds"} <= set(columns)
    assert set(columns) <= set(events)
    for r in log:
        for c in columns:
            assert events[c][int(r["step"])] == pytest.approx(float(r[c]), rel=1e-5, abs=1e-7), c  # CSV: 6 digits
    evals = rows(tmp_path / "eval.csv")
    assert events["eval_reward_mean"] == {2: pytest.approx(float(evals[0]["eval_reward_mean"]), rel=1e-5)}
    assert agent.trainer.accelerator.trackers == []  # finished and handed back after the fit

    # an accelerator of the user's, with its own tracker: it receives the same rows (here report_to is "none")
    from accelerate import Accelerator

    mine = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(tmp_path / "mine"))
    mine.init_trackers("user")
    again = make_agent("ppo", policy=tiny_llama(seed=0), config={**config, "report_to": "none"}, max_new_tokens=8,
                       accelerator=mine)
    again.fit({"unlabeled": env}, output_dir=str(tmp_path / "again"))
    mine.get_tracker("tensorboard").finish()
    assert not (tmp_path / "again" / "runs").exists()
    theirs = scalars(tmp_path / "mine" / "user")
    for r in rows(tmp_path / "again" / "metrics.csv"):
        assert theirs["reward_mean"][int(r["step"])] == pytest.approx(float(r["reward_mean"]), rel=1e-5)


@pytest.mark.slow
def test_reward_model_events_are_trls_logged_losses_after_a_resume(tmp_path):
    """TRL's report_to: its TensorBoard callback writes the loss of every logged step, beside the model (and, at the
    end, TRL's summary of the run: train/epoch again, train/train_loss, ...). A run killed after logging step 3 (its
    checkpoint is step 2) and resumed shows each step once."""
    rows_ = [{"instruction": f"Write {i}.", "input": "", "output_1": f"excellent {i}" if i % 2 else f"bad {i}",
              "output_2": f"bad {i}" if i % 2 else f"excellent {i}", "preference": 1 if i % 2 else 2}
             for i in range(24)]
    seen: dict[int, float] = {}

    class Logged(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                seen[state.global_step] = float(logs["loss"])

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 4:  # step 3 logged, the last checkpoint is step 2
                raise KeyboardInterrupt("killed")

    backbone = rm.tiny_reward_model(tmp_path / "backbone")
    kw = dict(n_eval=0, learning_rate=1e-3, per_device_train_batch_size=4, gradient_accumulation_steps=1,
              logging_steps=1, save_steps=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        rm.train_reward_model(rows_, str(backbone), tmp_path / "rm", report_to="tensorboard",
                              callbacks=[Logged(), Kill()], **kw)
    assert sorted(scalars(tmp_path / "rm.work" / "runs" / "reward_model")["train/loss"]) == [1, 2, 3]
    out = rm.train_reward_model(rows_, str(backbone), tmp_path / "rm", report_to="tensorboard", callbacks=[Logged()],
                                **kw)
    assert rm.reward_model_summary(out)["resumed_from"] == "checkpoint-2"
    events = scalars(out / "runs" / "reward_model", once=("train/loss",))
    assert sorted(seen) == list(range(1, 7))
    assert events["train/loss"] == {s: pytest.approx(v, rel=1e-6) for s, v in seen.items()}
    assert not (tmp_path / "rm.work").exists()
    # the same inputs without tracking: the finished model, not a refusal
    assert rm.train_reward_model(rows_, str(backbone), tmp_path / "rm", **kw) == out


@pytest.mark.slow
def test_dpo_events_are_its_metrics_rows(tmp_path):
    """TRL's DPO logs into <output_dir>/runs/dpo, which outlives the Trainer's folder: each step's loss and reward
    margin as metrics.csv has them."""
    pairs = [{"prompt": f"Name a fruit ({i}).\n", "chosen": f"banana {i}", "rejected": f"no {i}"} for i in range(8)]
    config = DPOTrainingConfig(learning_rate=1e-3, warmup_ratio=0.0, per_device_batch_size=4,
                               gradient_accumulation_steps=1, max_steps=3, report_to="tensorboard")
    train_dpo(load_policy("tiny-llama"), pairs, config, tmp_path, progress=False)
    log, events = rows(tmp_path / "metrics.csv"), scalars(tmp_path / "runs" / "dpo", once=("train/loss",))
    assert not (tmp_path / "trainer").exists() and [r["step"] for r in log] == ["1", "2", "3"]
    for r in log:
        assert events["train/loss"][int(r["step"])] == pytest.approx(float(r["loss"]), rel=1e-6)
        assert events["train/rewards/margins"][int(r["step"])] == pytest.approx(float(r["rewards/margins"]),
                                                                                rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_a_tracked_benchmark_logs_every_training_and_its_rerun_untracked_reuses_everything(data_dir, tmp_path):
    """The preset's top-level report_to reaches the SFT stage, the reward model stage, DPO and PPO (each writes its
    event files); the same preset without tracking then resumes the same run dir and trains and generates nothing."""
    small_sft = {"max_steps": 2, "max_length": 256, "per_device_batch_size": 4, "gradient_accumulation_steps": 1,
                 "learning_rate": 1e-3}
    rl = {"rollout_batch_size": 4, "step_batch_size": 4, "rollout_per_device_batch_size": 4,
          "step_per_device_batch_size": 2, "query_len": 512, "response_len": 6, "total_steps": 2, "save_steps": 1,
          "eval_steps": 0, "n_eval_prompts": 0, "learning_rate": 1e-3, "warmup_steps": 0}
    data = {"name": "tracked", "policy": "tiny-llama", "annotator": "longer", "n_eval": 4, "n_select": 4,
            "runs_root": str(tmp_path / "runs"), "report_to": "tensorboard",
            "generation": {"max_new_tokens": 6, "batch_size": 4},
            "stages": {"sft": small_sft,
                       "preferences": {"annotator": "longer", "n_instructions": 8, "max_new_tokens": 6,
                                       "batch_size": 4, "num_envs": 4},
                       "reward_model": {"backbone": "sft", "n_eval": 2, "learning_rate": 1e-3, "logging_steps": 1,
                                        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                                        "model_max_length": 96}},
            "methods": {"sft": {}, "dpo": {"config": {"max_steps": 2, "max_length": 512, "per_device_batch_size": 2,
                                                      "gradient_accumulation_steps": 1}},
                        "ppo": {"config": rl}}}
    first = run_benchmark(BenchmarkConfig.from_dict(data), data_dir=data_dir, progress=False, log=lambda m: None)
    run_dir = Path(first["run_dir"])
    events = sorted(run_dir.rglob("events.out.tfevents.*"))
    logged = {p.parent.name: p.parent for p in events}
    assert set(logged) == {"sft", "reward_model", "dpo", "ppo"}
    assert logged["sft"].parent.parent.name.startswith("sft-")  # the SFT stage's folder
    assert scalars(logged["ppo"])["reward_mean"].keys() == {1, 2}
    assert "train/loss" in scalars(logged["reward_model"], once=())

    second = run_benchmark(BenchmarkConfig.from_dict(plain(data)), data_dir=data_dir, progress=False,
                           log=lambda m: None)
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()] == [run_dir.name]  # the same run dir
    assert all(m["n_generated"] == 0 for m in second["this_run"].values()), second["this_run"]
    assert sorted(run_dir.rglob("events.out.tfevents.*")) == events  # nothing trained again
    for a, b in zip(first["methods"], second["methods"]):
        assert (a["method"], a["metrics"], a["settings"], a["seconds"]) == \
            (b["method"], b["metrics"], b["settings"], b["seconds"])
        assert "report_to" not in json.dumps(a["settings"])
