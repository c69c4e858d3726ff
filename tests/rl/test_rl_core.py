"""The rl/ toolkit: whitening, reward shaping, GAE, the PPO and Quark losses, the KL controller, the response padding
and the per-token alignment of log-probs and values, each against numbers worked out by hand in the comments; the
configs (RLConfig and its extensions, every field documented) and the run key older run dirs hold."""
from __future__ import annotations

import math

import pytest
import torch

import alpaca_farm_env.rl as rc
from alpaca_farm_env.csvlog import CSVLogger

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


# ---------------------------------------------------------------------------------------------------- whiten
def test_whiten_shift_mean_and_not():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # mean 2.5; population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25; std 1.1180340
    w = [-1.5 / 1.1180340, -0.5 / 1.1180340, 0.5 / 1.1180340, 1.5 / 1.1180340]  # -1.341641, -0.447214, ...
    assert close(rc.whiten(x), torch.tensor(w).view(2, 2))
    # shift_mean=False adds the mean back: 1.158359, 2.052786, 2.947214, 3.841641
    assert close(rc.whiten(x, shift_mean=False), torch.tensor([1.158359, 2.052786, 2.947214, 3.841641]).view(2, 2))


def test_whiten_masked():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # statistics of 1, 2, 3 only: mean 2, variance 2/3, std 0.8164966; masked-out entries come back as 0
    expected = torch.tensor([[-1.2247449, 0.0, 0.0], [1.2247449, 0.0, 0.0]])
    assert close(rc.whiten(x, mask), expected)
    # without the mean shift: 0.7752551, 2, 3.2247449
    assert close(rc.whiten(x, mask, shift_mean=False), torch.tensor([[0.7752551, 2.0, 0.0], [3.2247449, 0.0, 0.0]]))


def test_whiten_all_reduced_statistics_are_the_whole_batch():
    # two "processes" hold one row each; the all-reduce adds the other's (sum, sum of squares, count) = (7, 25, 2)
    mine = torch.tensor([[1.0, 2.0]])
    w = rc.whiten(mine, all_reduce=lambda s: s + torch.tensor([7.0, 25.0, 2.0]))
    # the whole batch [1, 2, 3, 4]: mean 2.5, std 1.1180340 -> -1.341641, -0.447214 (not the row's own -1, 1)
    assert close(w, torch.tensor([[-1.341641, -0.447214]]))


# ---------------------------------------------------------------------------------------------------- shaping
def test_shape_rewards():
    logp = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-1.0, 0.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, 0.0], [-3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    out = rc.shape_rewards(logp, ref, torch.tensor([3.0, -1.0]), mask, kl_coef=0.1)
    # row 0: kl = max(0.5, 0), max(-1, 0), 0, 0 = [0.5, 0, 0, 0]; penalty -0.05 at t0; score 3 at the last real token t2
    # row 1: kl = [2, 0, 0, 0]; penalty -0.2; score -1 at t0 (one real token)
    assert close(out["kl"], [[0.5, 0, 0, 0], [2.0, 0, 0, 0]])
    assert close(out["non_score"], [[-0.05, 0, 0, 0], [-0.2, 0, 0, 0]])
    assert close(out["shaped"], [[-0.05, 0, 3.0, 0], [-1.2, 0, 0, 0]])


# ---------------------------------------------------------------------------------------------------- GAE
def test_gae_gamma_lam_one_is_reward_to_go_minus_value():
    r = torch.tensor([[1.0, 0.0, 2.0]])
    v = torch.tensor([[0.5, 1.0, 1.5]])
    adv, ret = rc.gae(r, v)
    # A_t = sum_{k>=t} r_k - V_t: A_2 = 2 - 1.5 = 0.5, A_1 = 2 - 1 = 1, A_0 = 3 - 0.5 = 2.5; returns = A + V
    assert close(adv, [[2.5, 1.0, 0.5]])
    assert close(ret, [[3.0, 2.0, 2.0]])


def test_gae_general_gamma_lambda():
    r = torch.tensor([[1.0, 0.0, 2.0]])
    v = torch.tensor([[0.5, 1.0, 1.5]])
    adv, ret = rc.gae(r, v, gamma=0.9, lam=0.5)
    # delta_2 = 2 - 1.5 = 0.5; delta_1 = 0 + 0.9 * 1.5 - 1 = 0.35; delta_0 = 1 + 0.9 * 1 - 0.5 = 1.4
    # A_2 = 0.5; A_1 = 0.35 + 0.45 * 0.5 = 0.575; A_0 = 1.4 + 0.45 * 0.575 = 1.65875
    assert close(adv, [[1.65875, 0.575, 0.5]])
    assert close(ret, [[2.15875, 1.575, 2.0]])


def test_gae_masked_ends_at_the_last_real_token():
    r = torch.tensor([[1.0, 2.0, 5.0]])
    v = torch.tensor([[0.5, 1.0, 9.0]])
    adv, ret = rc.gae(r, v, mask=torch.tensor([[1, 1, 0]]))
    # the third position is outside: A_1 = 2 - 1 = 1, A_0 = 3 - 0.5 = 2.5, A_2 = 0
    assert close(adv, [[2.5, 1.0, 0.0]])
    assert close(ret, [[3.0, 2.0, 0.0]])


# ---------------------------------------------------------------------------------------------------- losses
def test_ppo_policy_loss_clipped():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.0]]))
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, 1.0, -2.0, 3.0]])
    loss, stats = rc.ppo_policy_loss(logp, old, adv, cliprange=0.2)
    # t0: r 1.5, A 1: max(-1.5, -1.2) = -1.2 (clipped); t1: r 0.5: max(-0.5, -0.8) = -0.5;
    # t2: r 1.1, A -2: 2.2 both; t3: r 1, A 3: -3. Mean (-1.2 - 0.5 + 2.2 - 3) / 4 = -0.625; 1 of 4 clipped
    assert math.isclose(float(loss), -0.625, abs_tol=1e-5)
    assert math.isclose(float(stats["clipfrac"]), 0.25, abs_tol=1e-6)
    # approxkl = 0.5 * mean(ln(1.5)^2, ln(0.5)^2, ln(1.1)^2, 0) = 0.5 * (0.164402 + 0.480453 + 0.009085) / 4
    assert math.isclose(float(stats["approxkl"]), 0.0817424, abs_tol=1e-5)


def test_ppo_value_loss_clipped():
    values = torch.tensor([[1.0, 0.0, 2.0]])
    old = torch.tensor([[0.5, 0.5, 2.0]])
    ret = torch.tensor([[2.0, 0.0, 1.0]])
    loss, stats = rc.ppo_value_loss(values, old, ret, cliprange_value=0.2)
    # t0: clip(1, 0.3, 0.7) = 0.7: max((1-2)^2, (0.7-2)^2) = 1.69; t1: clip(0) = 0.3: max(0, 0.09) = 0.09;
    # t2: unclipped: 1. Loss 0.5 * (1.69 + 0.09 + 1) / 3 = 0.4633333; clipped at t0 and t1
    assert math.isclose(float(loss), 0.4633333, abs_tol=1e-5)
    assert math.isclose(float(stats["clipfrac"]), 2 / 3, abs_tol=1e-6)


def test_quark_loss():
    # one real token, one pad; p = softmax(ln 3, 0) = (0.75, 0.25); the reference is uniform (0.5, 0.5)
    logits = torch.tensor([[[math.log(3.0), 0.0], [5.0, -5.0]]])
    ref = torch.tensor([[[0.0, 0.0], [-5.0, 5.0]]])
    labels = torch.tensor([[0, 1]])
    mask = torch.tensor([[1, 0]])
    loss, stats = rc.quark_loss(logits, ref, labels, mask, kl_coef=0.05)
    # NLL = -ln 0.75 = 0.2876821; KL = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.1308120; token 0.2876821 + 0.05 * 0.1308120
    # = 0.2942227; the pad contributes 0; the mean is over both positions: 0.1471114
    assert math.isclose(float(loss), 0.1471114, abs_tol=1e-5)
    assert math.isclose(float(stats["kl"]), 0.1308120, abs_tol=1e-5)
    # with an entropy bonus of 0.1: H = -(0.75 ln .75 + .25 ln .25) = 0.5623351 -> (0.2942227 - 0.0562335) / 2
    loss_h, _ = rc.quark_loss(logits, ref, labels, mask, kl_coef=0.05, entropy_coef=0.1)
    assert math.isclose(float(loss_h), 0.1189946, abs_tol=1e-5)


def test_adaptive_kl_controller():
    ctl = rc.make_kl_controller(0.1, adaptive=True, target_kl=6.0, k_beta=0.1)
    ctl.step(12.0)  # error 12/6 - 1 = 1, clipped to 0.2 -> x 1.02
    assert math.isclose(ctl.value, 0.102, rel_tol=1e-9)
    ctl.step(5.4)  # error -0.1 -> x 0.99
    assert math.isclose(ctl.value, 0.10098, rel_tol=1e-9)
    fixed = rc.make_kl_controller(0.0067)
    fixed.step(100.0)
    assert fixed.value == 0.0067


# ---------------------------------------------------------------------------------------------------- tokens
def test_pad_responses_cuts_after_the_first_eos():
    gen = torch.tensor([[5, 258, 7, 9], [5, 6, 7, 8]])
    resp, mask = rc.pad_responses(gen, [258], pad_id=256, response_len=5)
    assert resp.tolist() == [[5, 258, 256, 256, 256], [5, 6, 7, 8, 256]]
    assert mask.long().tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]


def test_positions_for_step_cover_each_prompt_once_per_epoch():
    s0 = rc.positions_for_step(5, 3, 0, seed=1, salt="t")
    s1 = rc.positions_for_step(5, 3, 1, seed=1, salt="t")
    assert sorted(s0 + s1[:2]) == [0, 1, 2, 3, 4]  # epoch 0 = step 0 and the first two of step 1
    assert s1[2] == rc.epoch_order(5, 1, 1, "t")[0]  # then epoch 1 starts
    assert rc.positions_for_step(5, 3, 1, seed=1, salt="t") == s1  # a function of (seed, step): resumable


def test_logprobs_and_values_read_the_position_before_each_response_token():
    from alpaca_farm_env.models import tiny_llama

    pol = tiny_llama(seed=3)
    tok = pol.tokenizer
    q, qm = rc.encode_queries(tok, ["ab", "abcd"], tok.pad_token_id)
    assert qm.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]  # <s> + bytes, left-padded
    resp = torch.tensor([[120, 121, 256], [122, 123, 124]])
    rm = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    inputs = rc.sequence_inputs(q, qm, resp, rm)
    with torch.no_grad():
        logits = rc.response_logits(pol.model, inputs, 3, temperature=2.0)
        full = pol.model(**inputs).logits
        # response token t of row 1 (no padding) is predicted at sequence position 5 + t - 1
        assert torch.allclose(logits[1, 0], full[1, 4] / 2.0, atol=1e-5)
        assert torch.allclose(logits[1, 2], full[1, 6] / 2.0, atol=1e-5)
        logp, _ = rc.token_logprobs(logits, resp, rm)
        assert logp[0, 2] == 0.0  # pads carry log-prob 0
        # left padding does not change the scores: row 0 alone without pads gives the same log-probs
        q0, qm0 = rc.encode_queries(tok, ["ab"], tok.pad_token_id)
        lone = rc.response_logits(pol.model, rc.sequence_inputs(q0, qm0, resp[:1], rm[:1]), 3, 2.0)
        assert torch.allclose(lone[0, :2], logits[0, :2], atol=1e-4)
        value = rc.ValueModel(rc.trunk_of(pol.model), pol.model.config.hidden_size)
        assert float(value(**inputs, response_len=3).abs().sum()) == 0.0  # zero head
        torch.nn.init.normal_(value.head.weight)
        v = value(**inputs, response_len=3)
        h = rc.trunk_of(pol.model)(**inputs).last_hidden_state
        assert torch.allclose(v[1, 0], value.head(h[1, 4]).squeeze(-1), atol=1e-5)


def test_csv_logger_resume_drops_rows_after_the_checkpoint(tmp_path):
    log = CSVLogger(tmp_path / "m.csv", ["step", "reward_mean"])
    for s in range(1, 5):
        log.log({"step": s, "reward_mean": s / 10})
    log.resume(2)  # the checkpoint was at step 2: rows 3 and 4 will be redone
    log.log({"step": 3, "reward_mean": 0.33})
    rows = log.read()
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert rows[-1]["reward_mean"] == "0.33"
    assert (tmp_path / "m.csv").read_text().count("step,reward_mean") == 1


def test_an_rl_agent_missing_a_hook_fails_at_construction():
    """A user's RL method on the shared core learns of a missing hook when it is built, not in the middle of a fit."""
    from alpaca_farm_env.rl import RLMethod

    class Partial(RLMethod):
        def build(self, policy, reward_backend):
            pass

    with pytest.raises(TypeError, match="step"):
        Partial()


# ---------------------------------------------------------------------------------------------------- configs, run key
def test_rl_config_holds_the_shared_fields_and_the_method_configs_extend_it():
    import dataclasses

    from alpaca_farm_env.agents.ppo import PPOConfig
    from alpaca_farm_env.agents.quark import QuarkConfig

    shared = [f.name for f in dataclasses.fields(rc.RLConfig)]
    assert len(shared) == 25 and "keep_checkpoints" in shared and "report_to" in shared
    assert issubclass(PPOConfig, rc.RLConfig) and issubclass(QuarkConfig, rc.RLConfig)
    assert [f.name for f in dataclasses.fields(PPOConfig)][:25] == shared
    assert set(f.name for f in dataclasses.fields(PPOConfig)) - set(shared) == {
        "noptepochs", "adaptive_kl", "target_kl", "k_beta", "cliprange", "cliprange_value", "vf_coef", "gamma", "lam",
        "whiten_rewards"}
    assert set(f.name for f in dataclasses.fields(QuarkConfig)) - set(shared) == {
        "entropy_coef", "num_reward_tokens", "train_on_best_quantile"}
    # the two methods' own defaults where the scripts differ (rlhf_ppo.sh vs rlhf_quark.sh)
    assert (PPOConfig().learning_rate, PPOConfig().kl_coef) == (1e-5, 0.0067)
    assert (QuarkConfig().learning_rate, QuarkConfig().kl_coef) == (3e-6, 0.05)
    assert PPOConfig.RANGES == QuarkConfig.RANGES == {"eval_steps": (0, None), "n_eval_prompts": (0, None)}


def test_every_field_of_every_rl_config_is_documented():
    """Each field is followed by its docstring (TRL style), in the class that declares it."""
    import ast
    import inspect

    from alpaca_farm_env.agents.ppo import PPOConfig
    from alpaca_farm_env.agents.quark import QuarkConfig

    for cls in (rc.RLConfig, PPOConfig, QuarkConfig):
        body = ast.parse(inspect.getsource(cls)).body[0].body
        for node, after in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign):
                name = node.target.id
                is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                doc = after.value.value if is_doc else None
                assert isinstance(doc, str) and len(doc.split()) >= 4, f"{cls.__name__}.{name} has no docstring"


def test_the_run_key_of_an_unchanged_config_is_the_one_older_run_dirs_hold():
    """Configs now inherit RLConfig (another field order); the run key digests sorted keys, so run dirs and
    checkpoints written before resume. The literals were computed with the code before the split."""
    from alpaca_farm_env.agents.ppo import PPOConfig
    from alpaca_farm_env.agents.quark import QuarkConfig

    reward = ("reward_model", {"model_dir": "runs/rm"})
    assert rc.run_key("ppo", PPOConfig(), *reward, "tiny-llama", 100, 2) == "dcb4d96f20d2fb66"
    assert rc.run_key("quark", QuarkConfig(seed=3), *reward, "tiny-llama", 100, 2) == "3a5a58010be389c1"
    # stop_after says where one call stops, not what the run is
    assert rc.run_key("ppo", PPOConfig(stop_after=3), *reward, "tiny-llama", 100, 2) == "dcb4d96f20d2fb66"
    assert rc.run_key("ppo", PPOConfig(kl_coef=0.5), *reward, "tiny-llama", 100, 2) != "dcb4d96f20d2fb66"
