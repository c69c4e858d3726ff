"""``expert_iteration`` on a tiny Llama and a tiny reward model: winners are the reward's argmax over the candidates,
read from the unlabeled env's prompts; SFT on them (from a copy of the SFT policy) lowers the training loss; the run
resumes from ``output_dir``; the trained policy answers at the benchmark's temperature."""
from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch

from alpaca_farm_env.agents import list_agents, make_agent
from alpaca_farm_env.agents.best_of_n import BestOfNAgent, BestOfNConfig
from alpaca_farm_env.agents.expert_iteration import ExpertIterationAgent, ExpertIterationConfig
from alpaca_farm_env.agents.sft_loop import SFTConfig
from alpaca_farm_env.models import load_policy
from alpaca_farm_env.rewards import make_reward
from alpaca_farm_env.rewards import reward_model as rm

N_PROMPTS = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reward_stage(tmp_path_factory):
    return rm.reward_model_spec(rm.tiny_reward_model(tmp_path_factory.mktemp("rm") / "tiny-rm", seed=0))


@pytest.fixture(scope="module")
def envs(data_dir):
    kw = {k: v for k, v in ExpertIterationAgent.ENVS["unlabeled"].items() if k != "id"}
    return {"unlabeled": gym.make(ExpertIterationAgent.ENVS["unlabeled"]["id"], **kw)}


def _config(**kw) -> ExpertIterationConfig:
    return ExpertIterationConfig(
        best_of_n=BestOfNConfig(n=4, max_new_tokens=12, batch_size=3, seed=0),
        sft=SFTConfig(num_train_epochs=6, learning_rate=3e-3, per_device_batch_size=3, gradient_accumulation_steps=1),
        n_prompts=N_PROMPTS, save_candidates=True, **kw)


def _fit(envs, reward_stage, out, policy=None):
    agent = make_agent("expert_iteration", config=_config(), max_new_tokens=12)
    policy = policy or load_policy("tiny-llama")
    agent.fit(envs, policy=policy, reward=reward_stage, output_dir=str(out))
    return agent, policy


def test_declarations_and_defaults():
    assert "expert_iteration" in list_agents()
    assert ExpertIterationAgent.ENVS == {"unlabeled": {"id": "AlpacaFarm-v0", "split": "unlabeled", "reward": "length"}}
    assert ExpertIterationAgent.STAGES == ("policy", "reward", "output_dir")
    cfg = ExpertIterationConfig()
    assert (cfg.best_of_n.n, cfg.best_of_n.temperature, cfg.best_of_n.top_p, cfg.best_of_n.max_new_tokens) == (16, 1.0, 0.9, 300)
    assert (cfg.sft.num_train_epochs, cfg.sft.learning_rate) == (3.0, 2e-5)
    assert cfg.sft.per_device_batch_size * cfg.sft.gradient_accumulation_steps == 128
    agent = make_agent("expert_iteration")
    assert (agent.temperature, agent.top_p, agent.max_new_tokens) == (0.7, 1.0, 300)  # the benchmark's sampling
    assert agent.describe()["reward"] is None  # no reward before fit, none given to the constructor
    assert make_agent("expert_iteration", reward="length").describe()["reward"] == "length"
    with pytest.raises(RuntimeError, match="fit"):
        agent.respond([{"instruction": "Say hi.", "input": ""}])
    with pytest.raises(ValueError, match="evaluator"):
        make_agent("expert_iteration", reward="annotator", reward_kwargs={"annotator": "longer"},
                   evaluator="longer").fit({}, policy=load_policy("tiny-llama"), output_dir="unused")


def test_winners_are_the_reward_argmax_and_sft_lowers_the_loss(envs, reward_stage, tmp_path):
    start = load_policy("tiny-llama")
    before = {k: v.clone() for k, v in start.model.state_dict().items()}
    agent, _ = _fit(envs, reward_stage, tmp_path / "ei", policy=start)

    # winners: one per unlabeled prompt, in the env's order, each the argmax of the reward over its 4 candidates
    demos = envs["unlabeled"].unwrapped.demonstrations[:N_PROMPTS]
    rows = [json.loads(line) for line in (tmp_path / "ei" / "best_of_n.jsonl").read_text().splitlines()]
    assert [(r["instruction"], r["input"]) for r in rows] == [(d["instruction"], d["input"]) for d in demos]
    backend = make_reward(reward_stage["reward"], **reward_stage["reward_kwargs"])
    for d, r in zip(demos, rows):
        assert len(r["candidates"]) == 4 and len(set(r["candidates"])) > 1
        scores = backend.score([d["prompt"]] * 4, r["candidates"])  # rescored independently
        assert scores == pytest.approx(r["scores"], abs=1e-5)
        best = max(range(4), key=lambda j: (scores[j], -j))
        assert r["output"] == r["candidates"][best] and r["reward"] == pytest.approx(max(scores), abs=1e-5)
    assert [w["output"] for w in agent.winners] == [r["output"] for r in rows]

    # SFT on (prompt, winner) from the SFT policy: the loss goes down, the winners become likelier
    s = agent.sft_summary
    assert s["examples"] == N_PROMPTS and s["steps"] == 12 and s["last_loss"] < s["first_loss"]
    prompts, outputs = [d["prompt"] for d in demos], [r["output"] for r in rows]
    assert sum(agent.policy.logprobs(prompts, outputs)) > sum(start.logprobs(prompts, outputs))
    # the stage's policy itself is untouched (other methods share it); the agent answers with the trained copy
    assert all(torch.equal(before[k], v) for k, v in start.model.state_dict().items())
    assert agent.policy is not start and (tmp_path / "ei" / "sft" / "model").is_dir()
    assert agent.describe()["reward"] == agent.reward_name == "reward_model:tiny-rm"  # the benchmark's row label
    answers = agent.respond([{"instruction": d["instruction"], "input": d["input"]} for d in demos[:2]])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_resumes_from_output_dir(envs, reward_stage, tmp_path):
    out = tmp_path / "ei"
    agent, _ = _fit(envs, reward_stage, out)
    path = out / "best_of_n.jsonl"
    full = path.read_text()

    # a finished output_dir: nothing sampled or trained again
    mtime = path.stat().st_mtime_ns
    again, _ = _fit(envs, reward_stage, out)
    assert path.stat().st_mtime_ns == mtime and again.sft_summary == agent.sft_summary
    assert again.describe()["reward"] == agent.describe()["reward"] == "reward_model:tiny-rm"  # nothing scored, same

    # killed after the first batch of 3 prompts (plus a torn line) and before SFT: the rest is sampled, then SFT runs
    lines = full.splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + lines[3][:20])
    import shutil

    shutil.rmtree(out / "sft")
    resumed, _ = _fit(envs, reward_stage, out)
    assert path.read_text() == full  # the same winners as the uninterrupted run, each prompt once
    assert resumed.sft_summary["last_loss"] == pytest.approx(agent.sft_summary["last_loss"], rel=1e-4)

    # an output_dir made with other settings is refused, not overwritten
    other = make_agent("expert_iteration", config=_config(), max_new_tokens=12)
    other.config.best_of_n.n = 3
    with pytest.raises(ValueError, match="fresh output_dir"):
        other.fit(envs, policy=load_policy("tiny-llama"), reward=reward_stage, output_dir=str(out))
    assert path.read_text() == full


def test_best_of_n_takes_the_reward_stage_and_the_override_wins(reward_stage):
    policy = load_policy("tiny-llama")
    obs = [{"instruction": "Name a colour.", "input": ""}, {"instruction": "Say hi.", "input": ""}]
    agent = BestOfNAgent(policy="unused", n=3, max_new_tokens=8)
    assert agent.STAGES == ("policy", "reward") and agent.ENVS == {}
    with pytest.raises(RuntimeError, match="no reward"):
        agent.respond(obs)
    agent.fit({}, policy=policy, reward=reward_stage)
    out = agent.respond(obs)
    assert agent.policy is policy and agent.reward_name == "reward_model:tiny-rm"
    assert agent.describe()["reward"] == "reward_model:tiny-rm"
    for o, cands, sc in zip(out, agent.last_candidates, agent.last_scores):
        assert o == cands[max(range(3), key=lambda j: (sc[j], -j))]
    # reward= in the constructor overrides the stage (e.g. length, as the tiny preset)
    by_length = BestOfNAgent(policy=policy, n=3, max_new_tokens=8, reward="length")
    by_length.fit({}, policy=policy, reward=reward_stage)
    out = by_length.respond(obs)
    assert by_length.reward_name == "length"
    assert [len(o) for o in out] == [max(len(c) for c in g) for g in by_length.last_candidates]
    with pytest.raises(ValueError, match="evaluator"):
        BestOfNAgent(policy=policy, evaluator="longer").fit({}, reward={"reward": "annotator",
                                                                     "reward_kwargs": {"annotator": "longer"}})
    cfg = BestOfNAgent(policy=policy)
    assert (cfg.n, cfg.temperature, cfg.top_p, cfg.max_new_tokens) == (16, 1.0, 0.9, 300)


def test_an_evaluator_assigned_after_construction_is_honoured(tmp_path):
    """The benchmark assigns ``evaluator`` after construction: best-of-n checks it again in ``fit`` and before every
    reranking, expert iteration in ``fit``, so a reward that judges like the evaluator is refused either way."""
    policy = load_policy("tiny-llama")
    obs = [{"instruction": "Say hi.", "input": ""}]
    judge = {"reward": "annotator", "reward_kwargs": {"annotator": "longer"}}

    by_constructor = BestOfNAgent(policy=policy, n=2, max_new_tokens=4, reward=judge["reward"],
                                  reward_kwargs=judge["reward_kwargs"])  # no evaluator yet: accepted
    by_constructor.evaluator = "longer"
    with pytest.raises(ValueError, match="evaluator"):
        by_constructor.fit({}, policy=policy)
    with pytest.raises(ValueError, match="evaluator"):
        by_constructor.respond(obs)
    assert by_constructor.n_generate_calls == 0  # refused before sampling

    by_stage = BestOfNAgent(policy=policy, n=2, max_new_tokens=4)
    by_stage.fit({}, policy=policy, reward=judge)  # no evaluator yet: accepted
    by_stage.evaluator = "longer"  # assigned between fit and respond
    with pytest.raises(ValueError, match="evaluator"):
        by_stage.respond(obs)
    assert by_stage.n_generate_calls == 0

    unrelated = BestOfNAgent(policy=policy, n=2, max_new_tokens=4, reward="length")
    unrelated.evaluator = "longer"  # a reward that is not the evaluator's judge reranks as before
    unrelated.fit({}, policy=policy)
    assert len(unrelated.respond(obs)) == 1 and unrelated.describe()["reward"] == "length"

    ei = make_agent("expert_iteration", reward=judge["reward"], reward_kwargs=judge["reward_kwargs"])
    ei.evaluator = "longer"
    with pytest.raises(ValueError, match="evaluator"):
        ei.fit({}, policy=policy, output_dir=str(tmp_path / "ei"))
    assert not (tmp_path / "ei").exists()  # refused before anything is written
