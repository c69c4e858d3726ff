"""The shared SFT loop's logs on a tiny random Llama: a run killed after a checkpoint and resumed logs every step
once and reports the first step's loss; examples whose prompt fills ``max_length`` (no target token left) are skipped
with a warning and counted, never logged as a 0.0 loss."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from alpaca_farm_env.agents.sft_loop import SFTConfig, train_sft
from alpaca_farm_env.models import load_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAIRS = [(f"Name a fruit ({i}).\n", f"banana {i}") for i in range(8)]
TINY = {"num_train_epochs": 2, "learning_rate": 3e-3, "warmup_ratio": 0.0, "per_device_batch_size": 2,
        "gradient_accumulation_steps": 1, "max_length": 48, "save_steps": 2}


def rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Killed(Exception):
    pass


def kill_at_forward(policy, n: int):
    """A forward hook on the real model that raises on its ``n``-th call: the loop dies in the middle of a step, as a
    killed process would (gradient accumulation 1, so call ``n`` is optimizer step ``n``)."""
    calls = [0]

    def hook(module, args, output):
        calls[0] += 1
        if calls[0] == n:
            raise Killed(f"killed during step {n}")

    return policy.model.register_forward_hook(hook)


def test_resume_logs_each_step_once_and_keeps_the_first_loss(tmp_path):
    cfg = SFTConfig(**TINY)  # 4 steps per epoch, 8 steps, a checkpoint every 2
    straight = train_sft(load_policy("tiny-llama"), PAIRS, cfg, tmp_path / "straight", progress=False)
    ref = rows(tmp_path / "straight" / "metrics.csv")
    assert straight["steps"] == 8 and [r["step"] for r in ref] == [str(s) for s in range(1, 9)]
    assert straight["first_loss"] == pytest.approx(float(ref[0]["loss"]), rel=1e-6)

    run = tmp_path / "run"
    policy = load_policy("tiny-llama")
    kill_at_forward(policy, 4)
    with pytest.raises(Killed):
        train_sft(policy, PAIRS, cfg, run, progress=False)
    # steps 1-3 logged, the last checkpoint at step 2: step 3 is redone on resume
    assert [r["step"] for r in rows(run / "metrics.csv")] == ["1", "2", "3"]
    assert (run / "checkpoint" / "state.pt").is_file() and not (run / "summary.json").exists()

    resumed = train_sft(load_policy("tiny-llama"), PAIRS, cfg, run, progress=False)
    log = rows(run / "metrics.csv")
    assert [r["step"] for r in log] == [str(s) for s in range(1, 9)]  # each step exactly once
    assert resumed["first_loss"] == straight["first_loss"]  # step 1 of the original run, not the first resumed step
    assert json.loads((run / "summary.json").read_text())["first_loss"] == straight["first_loss"]
    assert resumed["first_loss"] == float(log[0]["loss"])  # read back from the kept row, exactly
    # the resumed run is the uninterrupted one, step by step
    assert [float(r["loss"]) for r in log] == pytest.approx([float(r["loss"]) for r in ref], rel=1e-5)
    assert resumed["last_loss"] == pytest.approx(straight["last_loss"], rel=1e-5)
    assert resumed["last_loss"] < resumed["first_loss"]


def test_examples_without_targets_are_skipped_warned_and_counted(tmp_path):
    # prompts longer than max_length (48 bytes): truncation leaves no target token in these 3 examples
    long = [("Tell me about " + "very " * 20 + f"long topic {i}.\n", f"no {i}") for i in range(3)]
    pairs = PAIRS[:5] + long
    cfg = SFTConfig(**{**TINY, "per_device_batch_size": 1})  # one example per step: each long one is a whole step
    with pytest.warns(UserWarning, match=r"3 of 8 SFT examples have no target token") as caught:
        summary = train_sft(load_policy("tiny-llama"), pairs, cfg, tmp_path / "run", progress=False)
    assert any("6 micro-batches" in str(w.message) and "6 of 16 optimizer steps" in str(w.message) for w in caught)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    for s in (summary, saved):
        assert s["n_examples_without_targets"] == 3
        assert s["n_batches_without_targets"] == 6 and s["n_steps_without_targets"] == 6  # 3 per epoch, 2 epochs
        assert s["steps"] == 16
    log = rows(tmp_path / "run" / "metrics.csv")
    losses = [float(r["loss"]) for r in log]
    assert len(log) == 10 and len({r["step"] for r in log}) == 10  # the 6 skipped steps leave no row
    assert all(math.isfinite(x) and x > 0.0 for x in losses)
    assert summary["first_loss"] == losses[0] and summary["first_loss"] > 0.0

    # with gradient accumulation, a micro-batch without targets adds nothing and a step made only of them is skipped
    cfg = SFTConfig(**{**TINY, "per_device_batch_size": 1, "gradient_accumulation_steps": 2})
    with pytest.warns(UserWarning, match="no target token"):
        summary = train_sft(load_policy("tiny-llama"), pairs, cfg, tmp_path / "accum", progress=False)
    log = rows(tmp_path / "accum" / "metrics.csv")
    assert summary["steps"] == 8 and summary["n_batches_without_targets"] == 6
    assert 0 < summary["n_steps_without_targets"] < 6  # some steps skipped whole, others run with one micro-batch
    assert len(log) == 8 - summary["n_steps_without_targets"]  # a row for every step that had a target token
    assert all(float(r["loss"]) > 0.0 for r in log)


def test_no_target_anywhere_trains_nothing(tmp_path):
    policy = load_policy("tiny-llama")
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    match = "3 of 3 SFT examples have no target token.*leaves the model unchanged"
    with pytest.warns(UserWarning, match=match) as caught:
        summary = train_sft(policy, [("x" * 100, "y")] * 3, SFTConfig(**TINY), tmp_path / "run", progress=False)
    assert len(caught) == 1, [str(w.message) for w in caught]  # that warning alone (not torch's scheduler-order one)
    assert summary["steps"] == 4 and summary["n_steps_without_targets"] == 4
    assert summary["first_loss"] is None and summary["last_loss"] is None
    assert (tmp_path / "run" / "metrics.csv").read_text().splitlines() == ["step,epoch,loss,learning_rate"]
    assert all(torch.equal(before[k], v) for k, v in policy.model.state_dict().items())
