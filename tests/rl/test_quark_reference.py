"""Quark's training data against the reference (tatsu-lab/alpaca_farm ``src/alpaca_farm/rl/quark_trainer.py``):
targets re-tokenised from the decoded text, so EOS is never one; remainder rows in the last quantile; reward tokens
added as special tokens, initialised at the old rows' mean plus jitter x std; the reference model reads the prompt with
its reward token masked out; the first step's rollouts are sampled without the reward token."""
from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import alpaca_farm_env  # noqa: F401  (registers the envs)
from alpaca_farm_env.agents.quark import QuarkAgent, add_reward_tokens, ignore_tokens, reward_quantiles, reward_token
from alpaca_farm_env.models import tiny_llama
from alpaca_farm_env.rewards import register_reward
from alpaca_farm_env.rl.rollout import (
    decode_responses, encode_queries, pad_responses, response_logits, retokenize_pairs, sequence_inputs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lowercase_count(prompts, responses, **row):
    """The synthetic reward: the number of ASCII lower-case letters in the response."""
    return [float(sum(c.isascii() and c.islower() for c in r)) for r in responses]


register_reward("test_quark_reference_lowercase", lowercase_count, override=True)


class RecordingQuark(QuarkAgent):
    """Quark as it is, recording each step's rollouts (with the prefix they were sampled behind) and the data each
    optimizer step trains on."""

    def step(self, step):
        if not hasattr(self, "rollouts_seen"):
            self.rollouts_seen, self.pools = [], []
            inner = self.trainer.rollouts

            def rollouts(step, model, tokenizer, prefix=""):
                out = inner(step, model, tokenizer, prefix=prefix)
                self.rollouts_seen.append({"step": step, "prefix": prefix, "chunks": out[0], "scores": out[1]})
                return out

            self.trainer.rollouts = rollouts
        return super().step(step)

    def _optimise(self, data, n_kept, step):
        self.pools.append({k: v.clone() for k, v in data.items()})
        return super()._optimise(data, n_kept, step)


def run(data_dir, tmp_path, **kw):
    cfg = {**dict(rollout_batch_size=10, step_batch_size=4, rollout_per_device_batch_size=10,
                  step_per_device_batch_size=4, learning_rate=1e-3, warmup_steps=0, query_len=400, response_len=24,
                  total_steps=2, save_steps=10, eval_steps=0, n_eval_prompts=2, seed=1), **kw}
    agent = RecordingQuark(policy=tiny_llama(seed=0), config=cfg, max_new_tokens=24)
    env = gym.make("AlpacaFarm-v0", split="unlabeled", reward="test_quark_reference_lowercase", max_examples=40,
                   data_dir=data_dir)
    agent.fit({"unlabeled": env}, output_dir=str(tmp_path))
    return agent


@pytest.fixture(scope="module")
def all_quantiles(data_dir, tmp_path_factory):
    """Two steps of the all-quantile variant, 10 rollouts a step (4 quantiles: 2, 2, 2 and a remainder of 2)."""
    return run(data_dir, tmp_path_factory.mktemp("all_quantiles"), train_on_best_quantile=False)


# ------------------------------------------------------------------------------------------------ EOS
def test_the_loss_mask_of_a_response_that_ended_with_eos_excludes_it():
    policy = tiny_llama(seed=0)
    tok = policy.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    body = tok("abc", add_special_tokens=False).input_ids
    generated = torch.tensor([body + [eos] + body + body[:2], body * 3])  # one ended with EOS, one ran to the end
    responses, rollout_mask = pad_responses(generated, [eos], pad, response_len=9)
    assert rollout_mask[0].tolist() == [True] * 4 + [False] * 5  # the rollout mask holds the EOS ...
    data, kept = retokenize_pairs(tok, ["Q:", "Q:"], decode_responses(tok, responses), query_len=10, response_len=9)
    assert kept == [0, 1]
    assert data["response_mask"][0].tolist() == [True] * 3 + [False] * 6  # ... the training mask does not
    assert data["responses"][0, :3].tolist() == body
    assert eos not in data["responses"][data["response_mask"]].tolist()
    assert data["responses"][1].tolist() == body * 3 and bool(data["response_mask"][1].all())


def test_the_quark_step_trains_on_the_response_tokens_without_eos(data_dir, tmp_path):
    # every rollout is trained on (all quantiles); 40 a step, so that some end with EOS
    agent = run(data_dir, tmp_path, train_on_best_quantile=False, rollout_batch_size=40,
                rollout_per_device_batch_size=40, total_steps=1)
    tok = agent.tokenizer
    ended = 0
    for seen, pool in zip(agent.rollouts_seen, agent.pools):
        responses = torch.cat([c["responses"] for c in seen["chunks"]])
        mask = torch.cat([c["response_mask"] for c in seen["chunks"]])
        order = [i for q in reward_quantiles(seen["scores"], 4) for i in q]  # pool row j is rollout order[j]
        for j, i in enumerate(order):
            ended += int(responses[i][mask[i]][-1] == tok.eos_token_id)
            trained = pool["responses"][j][pool["response_mask"][j]].tolist()
            assert tok.eos_token_id not in trained
            # the decoded response, tokenised again: what the reward scored, special tokens gone
            text = decode_responses(tok, responses[i: i + 1])[0]
            assert trained == tok(text, add_special_tokens=False).input_ids[:24]
    assert ended > 0  # some rollouts did end with EOS, and the check above excluded it


# ------------------------------------------------------------------------------------------------ remainder rows
def test_remainder_rows_go_to_the_last_quantile():
    scores = [5.0, 1.0, 9.0, 3.0, 3.0, 7.0, 0.0, 2.0, 8.0, 6.0]  # 10 rollouts, 4 quantiles: 2, 2, 2 and 2 + 2
    q = reward_quantiles(scores, 4)
    assert [len(x) for x in q] == [2, 2, 2, 4]
    assert q == [[2, 8], [5, 9], [0, 3], [4, 7, 1, 6]]  # descending; the tie (3.0, 3.0) in rollout order
    assert sorted(i for x in q for i in x) == list(range(10))  # none dropped
    assert [len(x) for x in reward_quantiles(list(range(8)), 4)] == [2, 2, 2, 2]


def test_the_all_quantile_step_puts_the_remainder_behind_the_last_token(all_quantiles):
    agent = all_quantiles
    ids = [agent.tokenizer.convert_tokens_to_ids(reward_token(k)) for k in range(4)]
    for pool in agent.pools:  # 10 rollouts a step
        counts = [int((pool["queries"] == t).any(1).sum()) for t in ids]
        assert counts == [2, 2, 2, 4]


def test_the_best_quantile_step_keeps_n_over_k_rows_without_tokens(data_dir, tmp_path):
    agent = run(data_dir, tmp_path)
    for seen, pool in zip(agent.rollouts_seen, agent.pools):
        assert pool["queries"].shape[0] == 10 // 4 and "ref_query_mask" not in pool
        assert seen["prefix"] == ""


# ------------------------------------------------------------------------------------------------ reward tokens
def test_reward_tokens_are_special_and_initialised_at_the_mean_plus_jitter_times_std():
    policy = tiny_llama(seed=0)
    model, tok = policy.model, policy.tokenizer
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    n_old = add_reward_tokens(model, tok, 4, seed=1)
    assert n_old == old_in.shape[0] and len(tok) == n_old + 4
    assert set(tok.all_special_tokens) >= {reward_token(k) for k in range(4)}
    assert tok.decode(tok("<reward_2>ab").input_ids, skip_special_tokens=True) == "ab"  # dropped when decoded
    for old, new in ((old_in, model.get_input_embeddings().weight.detach()),
                     (old_out, model.get_output_embeddings().weight.detach())):
        assert torch.equal(new[:n_old], old)  # the old rows are untouched
        z = (new[n_old:] - old.mean(0)) / old.std(0)  # N(0, 1) if the rows are mean + noise x std
        assert abs(float(z.mean())) < 0.3 and 0.75 < float(z.std()) < 1.25
        assert float((new[n_old:] - old.mean(0)).abs().min()) > 0  # jittered, not the plain mean


# ------------------------------------------------------------------------------------------------ reference input
def test_the_reference_model_reads_the_prompt_without_the_reward_token():
    policy = tiny_llama(seed=0)
    model, tok = policy.model.eval(), policy.tokenizer
    add_reward_tokens(model, tok, 4, seed=1)
    prompts = ["Name a fruit.", "Name a colour, please."]
    responses = torch.tensor([tok(" kiwi", add_special_tokens=False).input_ids + [tok.pad_token_id],
                              tok(" red!!", add_special_tokens=False).input_ids])
    rmask = responses != tok.pad_token_id
    with_token, mask = encode_queries(tok, [reward_token(1) + p for p in prompts], tok.pad_token_id)
    masked = ignore_tokens(with_token, mask, [tok.convert_tokens_to_ids(reward_token(k)) for k in range(4)])
    assert int((mask - masked).sum()) == 2 and bool((masked[with_token == tok.convert_tokens_to_ids("<reward_1>")]
                                                     == 0).all())
    bare, bare_mask = encode_queries(tok, prompts, tok.pad_token_id)
    with torch.no_grad():
        seen = response_logits(model, sequence_inputs(with_token, masked, responses, rmask), 6, 1.0)
        plain = response_logits(model, sequence_inputs(bare, bare_mask, responses, rmask), 6, 1.0)
        unmasked = response_logits(model, sequence_inputs(with_token, mask, responses, rmask), 6, 1.0)
    torch.testing.assert_close(seen[rmask], plain[rmask], rtol=1e-4, atol=1e-4)  # as if the token were not there
    assert not torch.allclose(unmasked[rmask], plain[rmask], atol=1e-3)  # and the token does change the logits


def test_the_all_quantile_step_masks_the_reward_token_for_the_reference_only(all_quantiles):
    agent = all_quantiles
    ids = torch.tensor([agent.tokenizer.convert_tokens_to_ids(reward_token(k)) for k in range(4)])
    for pool in agent.pools:
        is_token = torch.isin(pool["queries"], ids)
        assert int(is_token.sum(1).min()) == 1 and int(is_token.sum(1).max()) == 1  # one token a row
        assert bool((pool["query_mask"][is_token] == 1).all())  # the policy attends to it
        assert bool((pool["ref_query_mask"][is_token] == 0).all())  # the reference does not
        assert torch.equal(pool["ref_query_mask"][~is_token], pool["query_mask"][~is_token])


def test_the_first_step_samples_without_the_reward_token(all_quantiles):
    agent = all_quantiles
    assert [(s["step"], s["prefix"]) for s in agent.rollouts_seen] == [(0, ""), (1, "<reward_0>")]
