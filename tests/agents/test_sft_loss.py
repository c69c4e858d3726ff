"""The SFT loop's loss averaging on a tiny random Llama: ``"example"`` (the default, the reference's per-device batch of
1 in ``examples/scripts/sft.sh``) is the mean of each example's own token mean, ``"token"`` the pooled token mean; under
``"example"`` gradient accumulation gives the loss and the gradient of one big batch."""
from __future__ import annotations

import pytest
import torch

from alpaca_farm_env.agents.sft_loop import (
    IGNORE_INDEX, SFTConfig, _optimizer_step, collate, n_targets, sft_example, sft_loss,
)
from alpaca_farm_env.models import tiny_llama

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# two demonstrations whose targets differ in length (5 vs 41 tokens with the byte tokenizer, EOS included)
PAIRS = [("Name a fruit.\n", "kiwi"), ("Describe a fruit.\n", "A banana is long, yellow and rather sweet.")]


def examples(policy, pairs=PAIRS):
    return [sft_example(policy.tokenizer, p, o, max_length=128) for p, o in pairs]


def per_token_losses(policy, example) -> torch.Tensor:
    """The cross-entropy of each target token of one example, computed alone (no padding, no batch)."""
    ids = torch.tensor([example["input_ids"]])
    labels = torch.tensor(example["labels"][1:])
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0, :-1].float()
    keep = labels != IGNORE_INDEX
    return torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="none")


def test_the_default_is_the_per_example_mean():
    assert SFTConfig().loss_averaging == "example"
    with pytest.raises(ValueError):
        SFTConfig(loss_averaging="sequence")


def test_example_mode_is_the_mean_of_per_example_means_and_token_mode_the_pooled_mean():
    policy = tiny_llama(seed=0)
    exs = examples(policy)
    counts = [n_targets(e) for e in exs]
    assert counts[0] != counts[1]  # the lengths differ, so the two averages differ
    tokens = [per_token_losses(policy, e) for e in exs]
    per_example_mean = (tokens[0].mean() + tokens[1].mean()) / 2
    pooled_mean = torch.cat(tokens).mean()
    assert abs(float(per_example_mean) - float(pooled_mean)) > 1e-3

    batch = collate(exs, policy.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = policy.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert float(sft_loss(logits, batch["labels"], "example")) == pytest.approx(float(per_example_mean), rel=1e-5)
    assert float(sft_loss(logits, batch["labels"], "token")) == pytest.approx(float(pooled_mean), rel=1e-5)


def test_an_example_without_targets_counts_for_nothing():
    policy = tiny_llama(seed=0)
    exs = examples(policy) + [{"input_ids": [257, 65, 66], "labels": [IGNORE_INDEX] * 3}]
    batch = collate(exs, policy.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = policy.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    two = collate(exs[:2], policy.tokenizer.pad_token_id)
    with torch.no_grad():
        logits_two = policy.model(input_ids=two["input_ids"], attention_mask=two["attention_mask"]).logits
    assert float(sft_loss(logits, batch["labels"])) == pytest.approx(float(sft_loss(logits_two, two["labels"])),
                                                                     rel=1e-5)


def step_loss_and_grads(group, averaging):
    """One ``_optimizer_step`` (lr 0, no clipping) on a fresh tiny Llama: returns its loss and the gradients it
    accumulated (read before the optimizer zeroes them)."""
    policy = tiny_llama(seed=0)
    model = policy.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = {}

    class Capture(torch.optim.SGD):
        def step(self, closure=None):
            grads.update({i: p.grad.detach().clone() for i, p in enumerate(params)})
            return super().step(closure)

    opt = Capture(params, lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    cfg = SFTConfig(loss_averaging=averaging, max_grad_norm=1e9)
    loss = _optimizer_step(model, params, opt, sched, group, policy.tokenizer.pad_token_id, torch.device("cpu"), cfg)
    return loss, grads


@pytest.mark.parametrize("averaging", ["example", "token"])
def test_gradient_accumulation_matches_one_big_batch(averaging):
    exs = examples(tiny_llama(seed=0), PAIRS + [("Name a colour.\n", "red"), ("Name a city.\n", "Paris, France")])
    big_loss, big = step_loss_and_grads([exs], averaging)  # one micro-batch of 4
    acc_loss, acc = step_loss_and_grads([exs[:1], exs[1:3], exs[3:]], averaging)  # 1 + 2 + 1, accumulated
    assert acc_loss == pytest.approx(big_loss, rel=1e-5)
    for i in big:
        torch.testing.assert_close(acc[i], big[i], rtol=1e-4, atol=1e-6)
    if averaging == "example":  # and the step's loss is the mean of the four per-example means
        policy = tiny_llama(seed=0)
        means = [float(per_token_losses(policy, e).mean()) for e in exs]
        assert big_loss == pytest.approx(sum(means) / 4, rel=1e-5)
