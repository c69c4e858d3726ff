"""Two PPO steps under ``accelerate launch`` with 2 CPU processes (DDP over gloo) on a tiny Llama: the processes roll
out disjoint shards of the env's prompts, and their parameters are identical afterwards.

The launch is ``accelerate launch --multi_gpu --num_processes 2`` with no visible GPU: in accelerate 1.15,
``--cpu --num_processes 2`` starts ONE process unless MPI is set up (``--mpirun_hostfile``), while ``--multi_gpu``
goes through torchrun, and ``Accelerator(cpu=True)`` (what the agent makes without CUDA) then joins a gloo group."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPT = textwrap.dedent('''
    import hashlib, json, sys
    import torch
    torch.set_num_threads(1)
    import gymnasium as gym
    import alpaca_farm_env  # noqa: F401
    from alpaca_farm_env.agents import make_agent
    from alpaca_farm_env.models import tiny_llama
    from alpaca_farm_env.rewards import register_reward

    register_reward("acc_lowercase", lambda p, r, **row: [float(sum(c.islower() for c in x)) for x in r])
    out = sys.argv[1]
    env = gym.make("AlpacaFarm-v0", split="unlabeled", reward="acc_lowercase", max_examples=40)
    cfg = dict(rollout_batch_size=8, step_batch_size=4, rollout_per_device_batch_size=4, step_per_device_batch_size=1,
               learning_rate=1e-3, warmup_steps=0, query_len=400, response_len=8, total_steps=2, save_steps=2,
               eval_steps=0, n_eval_prompts=0, seed=3)
    agent = make_agent("ppo", policy=tiny_llama(seed=0), config=cfg)
    agent.fit({"unlabeled": env}, output_dir=out + "/run")
    acc = agent.accelerator
    h = hashlib.sha256()
    for name, p in sorted(agent.trainer.unwrapped.named_parameters()):
        h.update(name.encode()); h.update(p.detach().cpu().numpy().tobytes())
    start = tiny_llama(seed=0).model.state_dict()
    moved = any(not torch.equal(v, start[k]) for k, v in agent.trainer.unwrapped.policy.state_dict().items())
    json.dump({"rank": acc.process_index, "world": acc.num_processes, "digest": h.hexdigest(), "moved": moved,
               "shard": [r["instruction"] for r in agent.trainer.env.rows]}, open(f"{out}/rank{acc.process_index}.json", "w"))
''')


@pytest.mark.slow
def test_two_processes_keep_identical_parameters(data_dir, tmp_path):
    script = tmp_path / "ppo_ddp.py"
    script.write_text(SCRIPT)
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "ALPACA_FARM_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": ""}
    with socket.socket() as sock:  # a free port for the rendezvous: the default 29500 may be taken on a shared host
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
                           str(script), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # DDP kept the replicas in step
    assert ranks[0]["moved"] and ranks[1]["moved"]  # and they did train
    assert not set(ranks[0]["shard"]) & set(ranks[1]["shard"])  # each process rolled out its own prompts
    log = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(log) == 3  # header + 2 steps, written once (by the main process)
