"""An AlpacaFarm env's prompts as a ``datasets.Dataset`` for TRL's online trainers (``GRPOTrainer``,
``RLOOTrainer``).

TRL generates from the ``prompt`` column and hands every other column to the reward functions as keyword lists, one
value per completion (huggingface/trl ``trl/trainer/grpo_trainer.py`` ``_calculate_rewards``). The columns here are
the ones the env itself passes to a reward backend (``envs.source.score_rows``): ``instruction``, ``input`` and
``reference_output``, so ``alpaca_farm_env.rewards.as_trl_reward_func`` scores a completion exactly as a step of the
env would: an annotator judges the instruction (never the templated prompt) against the reference output.
"""
from __future__ import annotations

from typing import Any

from .base import AlpacaFarmEnvBase

__all__ = ["as_trl_dataset"]


def as_trl_dataset(env: Any) -> Any:
    """Returns a ``datasets.Dataset`` with one row per prompt of ``env`` (an ``AlpacaFarm-v0`` env of any split, single
    or vector, wrapped or not), in the env's row order, with the columns

    * ``prompt``: the env's observation prompt (the AlpacaFarm template over instruction and input);
    * ``instruction`` and ``input``: the row's own text (what an annotator judges);
    * ``reference_output``: the split's reference (the eval split's Davinci003 output, a training split's ``output``),
      present only when every row has one.

    Raises ``TypeError`` for an env that is not an AlpacaFarm env."""
    from datasets import Dataset

    base = getattr(env, "unwrapped", env)
    if not isinstance(base, AlpacaFarmEnvBase):
        raise TypeError(f"as_trl_dataset needs an AlpacaFarm env (gym.make('AlpacaFarm-v0', ...)), got "
                        f"{type(env).__name__}")
    rows = list(base.rows)
    columns: dict[str, list[str]] = {key: [str(r[key]) for r in rows] for key in ("prompt", "instruction", "input")}
    references = [r.get("reference_output") for r in rows]
    if all(isinstance(ref, str) for ref in references):
        columns["reference_output"] = references
    return Dataset.from_dict(columns)
