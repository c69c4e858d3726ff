"""``binary_reward_conditioning``: SFT on both outputs of each pair, each behind a token that says whether it won, then
generation behind the winning token (paper Sec. 4, "Binary reward conditioning"; tatsu-lab/alpaca_farm ships no
script for it, only the checkpoint ``reward-condition-sim``).

Data: each pair with a winner (:func:`~.common.preference_pairs`: preference 1 -> ``output_1`` won, 2 ->
``output_2``; draws and unlabeled rows skipped) gives two demonstrations, so the dataset doubles:

* ``(positive_token + prompt, preferred output)`` and
* ``(negative_token + prompt, rejected output)``,

where ``prompt`` is the AlpacaFarm template over instruction and input. The token is **prepended to the prompt text**,
so a tokenizer that starts sequences with BOS gives ids ``[BOS, token, prompt...]`` (the token at position 1; 0
without BOS). As every SFT target, the loss covers the output + EOS only: the token and the prompt are labelled -100
(:func:`~.sft_loop.sft_example`). ``respond`` samples behind the positive token.

Tokens: the paper does not publish them. The reference's ``RewardConditioningPromptPostprocessor``
(tatsu-lab/alpaca_farm ``src/alpaca_farm/data_postprocessor.py``, used by Quark) prepends ``<reward_0>``, the best
reward quantile's token, so the positive token is ``<reward_0>`` and the negative ``<reward_1>`` (two quantiles). They
are added to the tokenizer as special tokens (skipped when decoding) and their embedding rows, input and output, start
at the mean of the existing rows (``src/alpaca_farm/utils.py`` ``stable_resize_token_embeddings``, without jitter).

Training: continued SFT from the SFT policy with the shared loop (:func:`~.sft_loop.train_sft`); hyper-parameters
unpublished, so :class:`RewardConditioningConfig` keeps the SFT recipe of ``examples/scripts/sft.sh`` (inferred).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from .base import register_agent
from .binary_feedme import BinaryFeedMEAgent
from .common import preference_pairs
from .sft import prompts_of
from .sft_loop import SFTConfig


@dataclass
class RewardConditioningConfig(SFTConfig):
    """The SFT recipe of ``examples/scripts/sft.sh`` (3 epochs, lr 2e-5, cosine, warm-up 3%, weight decay 0, batch
    128, max length 512, seed 42; inferred -- unpublished for this method) plus the two conditioning tokens."""

    positive_token: str = "<reward_0>"  # the reference's best-quantile token
    negative_token: str = "<reward_1>"

    def __post_init__(self) -> None:
        if not self.positive_token or not self.negative_token or self.positive_token == self.negative_token:
            raise ValueError("positive_token and negative_token must be two different non-empty strings")


def reward_conditioning_pairs(preferences: Any, positive_token: str = "<reward_0>",
                              negative_token: str = "<reward_1>") -> list[tuple[str, str]]:
    """The ``(conditioned prompt, output)`` demonstrations: per pair with a winner, the preferred output behind
    ``positive_token`` then the rejected one behind ``negative_token`` (twice as many as pairs)."""
    out: list[tuple[str, str]] = []
    for r in preference_pairs(preferences):
        out.append((positive_token + r["prompt"], r["chosen"]))
        out.append((negative_token + r["prompt"], r["rejected"]))
    return out


@torch.no_grad()
def add_reward_tokens(policy: Any, tokens: Sequence[str]) -> list[int]:
    """Add ``tokens`` to ``policy``'s tokenizer as special tokens and give each new one an embedding row (input and
    output) equal to the mean of the rows before the first new id (``stable_resize_token_embeddings``). Tokens the
    tokenizer already has keep their rows. Returns the ids of ``tokens``."""
    tok, model = policy.tokenizer, policy.model
    new = [t for t in dict.fromkeys(tokens) if t not in tok.get_vocab()]
    if new:
        tok.add_tokens(new, special_tokens=True)
        new_ids = tok.convert_tokens_to_ids(new)
        if max(new_ids) >= model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(max(new_ids) + 1, mean_resizing=False)
        first = min(new_ids)
        layers = [model.get_input_embeddings(), model.get_output_embeddings()]
        weights = {id(m.weight): m.weight for m in layers if m is not None}  # tied embeddings: one tensor
        for w in weights.values():
            w[new_ids] = w[:first].float().mean(dim=0, keepdim=True).to(w.dtype)
    return tok.convert_tokens_to_ids(list(tokens))


@register_agent("binary_reward_conditioning")
class BinaryRewardConditioningAgent(BinaryFeedMEAgent):
    """SFT of the SFT policy on token-conditioned preferred and rejected outputs, then sampling (temperature 0.7 by
    default) behind the positive token.

    ``config``: a :class:`RewardConditioningConfig` or a mapping of its fields; generation kwargs, ``fit`` (in place
    on the ``policy`` stage, saved to ``<output_dir>/model``, resumed on a rerun) as
    :class:`~.binary_feedme.BinaryFeedMEAgent`. The trained tokenizer (with the tokens) is saved beside the model.
    """

    name = "binary_reward_conditioning"
    CONFIG_CLASS: ClassVar[type] = RewardConditioningConfig

    def training_pairs(self, preferences: Any) -> list[tuple[str, str]]:
        return reward_conditioning_pairs(preferences, self.config.positive_token, self.config.negative_token)

    def prepare(self, policy: Any) -> None:
        add_reward_tokens(policy, [self.config.positive_token, self.config.negative_token])

    def respond(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        prompts = [self.config.positive_token + p for p in prompts_of(observations)]
        return [g[0] for g in self._sample(prompts, 1, self.temperature)]
