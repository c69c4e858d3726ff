"""GRPO, RLOO and online DPO (TRL's trainers) on a tiny Llama through the unlabeled AlpacaFarm-v0 env: each raises a
synthetic reward, a stopped run resumes from its last Trainer checkpoint, kept checkpoints load as policies (full weights, or a
LoRA adapter), the evaluator's judge is refused."""
from __future__ import annotations

import csv
import json

import gymnasium as gym
import pytest
import torch

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.agents import make_agent
from alpaca_farm_env.agents.grpo import GRPOAgent, GRPOConfig
from alpaca_farm_env.agents.online_dpo import OnlineDPOConfig
from alpaca_farm_env.agents.rloo import RLOOAgent, RLOOConfig
from alpaca_farm_env.models import tiny_llama
from alpaca_farm_env.rewards import register_reward

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lowercase_count(prompts, responses, **row):
    """The synthetic reward: how many ASCII lower-case letters the response has (a random byte-level policy writes
    about 1 in 12 tokens)."""
    return [float(sum(c.isascii() and c.islower() for c in r)) for r in responses]


register_reward("test_trl_lowercase", lowercase_count, override=True)


def env(data_dir, n=120):
    return gym.make("AlpacaFarm-v0", split="unlabeled", reward="test_trl_lowercase", max_examples=n, data_dir=data_dir)


def config(method="grpo", **kw):
    # the byte tokenizer makes the Alpaca template ~200 tokens: max_prompt_length must hold it
    base = dict(learning_rate=3e-2, max_steps=20, save_steps=10, eval_steps=0, max_prompt_length=400, seed=1)
    if method == "online_dpo":  # 8 prompts, a pair each: 16 completions a step, as the others
        base.update(per_device_train_batch_size=8, max_new_tokens=12, temperature=1.0)
    else:
        base.update(per_device_train_batch_size=16, num_generations=4, max_completion_length=12)
    return {**base, **kw}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def weights(model):
    return torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grpo", "rloo", "online_dpo"])
def test_raises_the_reward(method, data_dir, tmp_path):
    probes = []

    def hook(agent):  # the benchmark's eval hook: it answers with the policy being trained
        probes.append(agent.respond([{"instruction": "Hi", "input": "", "prompt": "### Response:"}])[0])
        return {"eval_probe": len(probes)}

    agent = make_agent(method, policy=tiny_llama(seed=0), config=config(method, eval_steps=10), evaluate=hook,
                       max_new_tokens=12)
    agent.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path))
    log = rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in log] == list(range(1, 21))
    for col in type(agent).CSV_FIELDS:
        assert log[0][col] != "" or (method, col) == ("grpo", "kl"), col  # GRPO's beta 0: no reference, no KL
    reward = [float(r["reward"]) for r in log]
    first, last = sum(reward[:5]) / 5, sum(reward[-5:]) / 5
    assert last > first + 3.0, reward  # measured: ~1.2 -> ~11 (grpo), ~1.0 -> ~8 (rloo), ~1.3 -> ~7.5 (online_dpo)
    if method in ("rloo", "online_dpo"):  # a reference policy is loaded and the policy moved from it
        assert float(log[-1]["kl" if method == "rloo" else "objective/kl"]) != 0.0
    if method == "online_dpo":  # the pair's chosen completion is the higher-rewarded one
        assert all(float(r["objective/scores_margin"]) >= 0 for r in log)
    assert [r["step"] for r in rows(tmp_path / "eval.csv")] == ["10", "20"] and len(probes) == 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["reward"] == "lowercase_count" == agent.describe()["reward"]
    assert (tmp_path / "model" / "config.json").is_file()
    assert not (tmp_path / "trainer").exists() and not (tmp_path / "reference").exists()  # resume state dropped
    assert agent.history[-1]["step"] == 20 and len(agent.history) == 20
    assert len(agent.respond([{"instruction": "Say hi.", "input": "", "prompt": "### Response:"}])) == 1


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grpo", "online_dpo"])
def test_a_stopped_run_resumes_from_the_last_trainer_checkpoint(method, data_dir, tmp_path):
    cfg = config(method, max_steps=5, save_steps=2)
    stopped = make_agent(method, policy=tiny_llama(seed=0), config={**cfg, "stop_after": 3})
    stopped.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "run"))
    assert [r["step"] for r in rows(tmp_path / "run" / "metrics.csv")] == ["1", "2", "3"]  # step 3 not checkpointed
    assert not stopped.fitted and not (tmp_path / "run" / "model").exists()
    assert [p.name for p in (tmp_path / "run" / "trainer").iterdir() if p.is_dir()] == ["checkpoint-2"]
    with pytest.raises(RuntimeError, match="fit"):
        stopped.respond([{"instruction": "Hi", "input": "", "prompt": "Hi"}])
    resumed = make_agent(method, policy=tiny_llama(seed=0), config=cfg)
    resumed.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "run"))
    log = rows(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in log] == ["1", "2", "3", "4", "5"]  # step 3 redone once, no duplicate
    assert resumed.fitted and [h["step"] for h in resumed.history] == [1, 2, 3, 4, 5]
    # the resumed run is the uninterrupted run (TRL restores the RNG and the data order): same samples, same updates
    straight = make_agent(method, policy=tiny_llama(seed=0), config=cfg)
    straight.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "straight"))
    for a, b in zip(log, rows(tmp_path / "straight" / "metrics.csv")):
        assert (a["reward"], a["loss"]) == (b["reward"], b["loss"])
    # a finished run is loaded, not trained again; one with another config is refused
    again = make_agent(method, policy=tiny_llama(seed=0), config=cfg)
    again.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "run"))
    assert again.fitted and len(again.history) == 5 and not (tmp_path / "run" / "trainer").exists()
    assert torch.equal(weights(again.policy.model), weights(resumed.policy.model))
    with pytest.raises(ValueError, match="fresh output_dir"):
        make_agent(method, policy=tiny_llama(seed=0), config={**cfg, "beta": 0.3}).fit(
            {"unlabeled": env(data_dir)}, output_dir=str(tmp_path / "run"))


@pytest.mark.slow
@pytest.mark.parametrize("method, peft", [("grpo", False), ("rloo", True), ("online_dpo", True)])
def test_kept_checkpoints_load_as_policies(method, peft, data_dir, tmp_path):
    cfg = config(method, max_steps=5, save_steps=2, keep_checkpoints=True, use_peft=peft, lora_r=4)
    start = tiny_llama(seed=0)
    agent = make_agent(method, policy=start, config=cfg)
    assert agent.checkpoint_schedule(cfg) == [2, 4, 5]
    agent.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path))
    assert agent.checkpoint_steps() == [2, 4, 5]
    kept = tmp_path / "checkpoints" / "step_2"
    assert (kept / "adapter_config.json").is_file() == peft  # LoRA: the adapter only
    assert any(kept.glob("*.safetensors"))
    final = weights(agent.policy.model)
    at_2, at_5 = (weights(agent.checkpoint_policy(k).model) for k in (2, 5))
    assert torch.allclose(at_5, final, atol=1e-6)  # the last kept policy is the trained one
    assert not torch.allclose(at_2, final) and not torch.allclose(at_2, weights(start.model))
    agent.policy = agent.checkpoint_policy(2)  # the benchmark's selection answers with a kept step
    assert agent.policy.name.endswith(f":{method}@2") and len(agent.respond([{"prompt": "Hi", "instruction": "Hi"}]))
    with pytest.raises(ValueError, match="kept no policy at step 3"):
        agent.checkpoint_policy(3)


def test_checkpoint_schedule_is_known_before_training():
    from alpaca_farm_env.benchmark.selection import check_select
    from alpaca_farm_env.errors import ConfigError

    assert GRPOAgent.checkpoint_schedule({"max_steps": 50, "save_steps": 20}) == [20, 40, 50]
    assert RLOOAgent.checkpoint_schedule() == list(range(20, 390, 20)) + [390]
    # the benchmark checks a method's select before any compute
    given = {"select": "step:7", "config": {"max_steps": 10, "save_steps": 5}}
    with pytest.raises(ConfigError, match=r"keeps checkpoints at steps \[5, 10\] \(save_steps 5, total_steps 10\)"):
        check_select("grpo", given, GRPOAgent, "preset")
    check_select("rloo", {**given, "select": "step:5"}, RLOOAgent, "preset")


@pytest.mark.slow
@pytest.mark.parametrize("method, tag", [("grpo", "train/reward"), ("online_dpo", "train/objective/scores")])
def test_report_to_tensorboard_logs_the_metrics_csv_rows(method, tag, data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    agent = make_agent(method, policy=tiny_llama(seed=0), config=config(method, max_steps=2, report_to="tensorboard"))
    agent.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path))
    acc = EventAccumulator(str(tmp_path / "runs" / method), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars(tag)}  # metrics.csv's reward column under TRL's name
    assert logged == pytest.approx({int(r["step"]): float(r["reward"]) for r in rows(tmp_path / "metrics.csv")})


def test_config_fields_are_checked_before_training():
    from alpaca_farm_env.errors import ConfigError
    from alpaca_farm_env.validation import check_fields

    check_fields(GRPOConfig, {"top_k": 0, "eval_steps": 0, "epsilon_high": None, "report_to": "tensorboard"}, "p")
    with pytest.raises(ConfigError, match="num_generations: must be >= 2"):
        check_fields(GRPOConfig, {"num_generations": 1}, "p")
    with pytest.raises(ConfigError, match="did you mean 'num_generations'"):
        check_fields(RLOOConfig, {"num_generation": 2}, "p")
    with pytest.raises(ConfigError, match="report_to: unknown tracker 'tb'"):
        check_fields(RLOOConfig, {"report_to": "tb"}, "p")
    check_fields(OnlineDPOConfig, {"beta": 0.2, "loss_type": "ipo", "max_new_tokens": 32}, "p")
    with pytest.raises(ConfigError, match="did you mean 'max_new_tokens'"):
        check_fields(OnlineDPOConfig, {"max_new_token": 32}, "p")
    with pytest.raises(ConfigError, match="num_generations"):  # a pair per prompt: no group size to set
        check_fields(OnlineDPOConfig, {"num_generations": 4}, "p")
    with pytest.raises(ValueError, match="loss_type: 'hinge' is not one of"):
        OnlineDPOConfig(loss_type="hinge")


def test_refuses_the_evaluator_as_reward(data_dir, tmp_path):
    for method in ("grpo", "rloo", "online_dpo"):
        agent = make_agent(method, policy=tiny_llama(seed=0), config=config(method), evaluator="longer")
        with pytest.raises(ValueError, match="evaluator"):
            agent.fit({"unlabeled": env(data_dir)}, output_dir=str(tmp_path),
                      reward={"reward": "annotator", "reward_kwargs": {"annotator": "longer"}})
        assert not (tmp_path / "metrics.csv").exists()
