"""Gymnasium environments. Importing this package only registers them (string entry points: cheap).

* ``AlpacaFarm-v0`` -> :class:`~alpaca_farm_env.envs.text_env.AlpacaFarmEnv` (text in, text out, one step per
  episode); ``gym.make_vec("AlpacaFarm-v0", num_envs=N)`` -> :class:`~alpaca_farm_env.envs.vector_env.AlpacaFarmVectorEnv`
  (one batched reward call per step, same-step autoreset).
* ``AlpacaFarmToken-v0`` -> :class:`~alpaca_farm_env.envs.token_env.AlpacaFarmTokenEnv` (one token per step).
* ``AlpacaFarmPairwise-v0`` -> :class:`~alpaca_farm_env.envs.pairwise_env.AlpacaFarmPairwiseEnv` (a pair of responses
  in, the annotator's preference out); ``gym.make_vec`` -> ``AlpacaFarmPairwiseVectorEnv`` (one annotation call per
  step).

``gym.make("alpaca_farm_env:AlpacaFarm-v0")`` imports the package and registers them on the fly.

Every env derives from :class:`~alpaca_farm_env.envs.base.AlpacaFarmEnvBase` (the seeded reset, the reward backend
or annotator and its :class:`~alpaca_farm_env.context.RewardContext`) and takes the
:class:`~alpaca_farm_env.envs.base.EpisodeConfig` fields as keyword arguments:
``isinstance(env.unwrapped, AlpacaFarmEnvBase)`` tells an AlpacaFarm env.
"""
from __future__ import annotations

from typing import Any

import gymnasium

TEXT_ENV_ID = "AlpacaFarm-v0"
TOKEN_ENV_ID = "AlpacaFarmToken-v0"
PAIRWISE_ENV_ID = "AlpacaFarmPairwise-v0"


def _register() -> None:
    if TEXT_ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=TEXT_ENV_ID,
            entry_point="alpaca_farm_env.envs.text_env:AlpacaFarmEnv",
            vector_entry_point="alpaca_farm_env.envs.vector_env:AlpacaFarmVectorEnv",
        )
    if TOKEN_ENV_ID not in gymnasium.registry:
        gymnasium.register(id=TOKEN_ENV_ID, entry_point="alpaca_farm_env.envs.token_env:AlpacaFarmTokenEnv")
    if PAIRWISE_ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=PAIRWISE_ENV_ID,
            entry_point="alpaca_farm_env.envs.pairwise_env:AlpacaFarmPairwiseEnv",
            vector_entry_point="alpaca_farm_env.envs.pairwise_env:AlpacaFarmPairwiseVectorEnv",
        )


_register()

_LAZY = {
    "AlpacaFarmEnvBase": "base",
    "EpisodeConfig": "base",
    "AlpacaFarmEnv": "text_env",
    "AlpacaFarmVectorEnv": "vector_env",
    "AlpacaFarmTokenEnv": "token_env",
    "AlpacaFarmPairwiseEnv": "pairwise_env",
    "AlpacaFarmPairwiseVectorEnv": "pairwise_env",
    "UnicodeText": "spaces",
    "clear_reward_cache": "source",
    "as_trl_dataset": "trl_dataset",
}


def __getattr__(name: str) -> Any:  # lazy: `from alpaca_farm_env.envs import AlpacaFarmEnv` imports on demand
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TEXT_ENV_ID", "TOKEN_ENV_ID", "PAIRWISE_ENV_ID", *_LAZY]
