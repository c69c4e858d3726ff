"""The models around an RL policy: the value model (a trunk plus a zero-initialised scalar head), the trunk of a
causal or sequence-classification model, the frozen reference policy (a copy, or the same model with its LoRA adapter
disabled), and LoRA itself.

Reference (tatsu-lab/alpaca_farm): ``src/alpaca_farm/models/rl_models.py`` (``Value``, ``make_value_with_base_model``,
``ActorCritic``), ``examples/rlhf_ppo.py`` (``init_value_with_reward``: the value model starts from the reward model).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import torch

Tensor = torch.Tensor

__all__ = ["ValueModel", "frozen_copy", "reference_of", "same_vocab", "trunk_of", "with_lora"]


class ValueModel(torch.nn.Module):
    """A transformer trunk (``AutoModel``-style, returning ``last_hidden_state``) plus a scalar head, zero-initialised
    (reference ``rl_models.make_value_with_base_model``: the value head of the RM trunk starts at zero)."""

    def __init__(self, trunk: Any, hidden_size: int, trainable_trunk: bool = True):
        super().__init__()
        self.trunk = trunk
        self.head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        if not trainable_trunk:
            for p in trunk.parameters():
                p.requires_grad_(False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, response_len: int) -> Tensor:
        """Values of the response positions: the value of response token t is read from the hidden state of the token
        before it (reference ``rl_models.Value.forward``: ``last_hidden_state[:, query_len - 1 : -1]``)."""
        h = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).last_hidden_state
        h = h[:, -response_len - 1: -1]
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1)


def trunk_of(model: Any) -> Any:
    """Returns the transformer trunk of a ``*ForCausalLM`` / ``*ForSequenceClassification`` (its ``base_model``; the
    wrapped model's for a peft model)."""
    base = getattr(model, "base_model", model)
    if hasattr(base, "get_base_model"):  # a peft wrapper
        base = base.get_base_model().base_model
    return base


def same_vocab(tok_a: Any, tok_b: Any) -> bool:
    """Whether two tokenizers map the same strings to the same ids (the reference requires it of policy and RM)."""
    return tok_a is tok_b or tok_a.get_vocab() == tok_b.get_vocab()


def with_lora(model: Any, r: int, alpha: int | None = None, dropout: float = 0.0) -> Any:
    """``model`` wrapped with LoRA (peft) on its attention and MLP projections (returns the peft model); the frozen
    base is the reference policy (``with model.disable_adapter():``)."""
    from peft import LoraConfig, get_peft_model

    targets = [n for n in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
               if any(name.endswith(n) for name, _ in model.named_modules())]
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha or 2 * r, lora_dropout=dropout,
                                            target_modules=targets or None, task_type="CAUSAL_LM"))


@contextmanager
def reference_of(model: Any, ref_model: Any | None) -> Iterator[Any]:
    """The reference policy: yields ``ref_model`` when there is one, else ``model`` with its LoRA adapter disabled
    (for the duration of the block)."""
    if ref_model is not None:
        yield ref_model
    else:
        with model.disable_adapter():
            yield model


def frozen_copy(model: Any) -> Any:
    """Returns a frozen, eval-mode deep copy of ``model`` (the reference policy of full mode)."""
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref.eval()
