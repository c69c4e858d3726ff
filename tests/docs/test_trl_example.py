"""examples/trl_own_trainer.py: a user's own TRL GRPOTrainer on the env's prompts with the package's reward runs as
printed (here on the tiny random Llama and the synthetic ``length`` reward), one logged reward per step."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_own_trainer.py"


def test_the_example_is_about_twenty_lines():
    body = EXAMPLE.read_text().split('"""', 2)[2]  # after the module docstring
    lines = [line for line in body.splitlines() if line.strip()]
    assert len(lines) <= 22, len(lines)


@pytest.mark.slow
def test_the_example_trains_two_steps(data_dir, tmp_path):
    env = {**os.environ, "ALPACA_FARM_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "tiny-llama", "length", str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("mean reward per step:"))
    rewards = ast.literal_eval(line.split(":", 1)[1].strip())
    assert len(rewards) == 2 and all(r > 0 for r in rewards)  # the length reward of sampled completions
    assert (out / "config.json").is_file()  # the trained policy, saved by the user's trainer
