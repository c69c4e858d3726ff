"""``gym.make_vec("AlpacaFarm-v0", num_envs=N)``: N text episodes per step, scored with ONE batched reward call.

Episodes are a single step, so the env autoresets in the same step (Gymnasium 1.x ``AutoresetMode.SAME_STEP``): the
observations returned by ``step`` are already the next episodes' prompts, and the finished episodes' observations and
infos are under ``infos["final_obs"]`` (object array of observation dicts) and ``infos["final_info"]`` (a dict of
per-env arrays, each key with its ``_key`` mask), Gymnasium's documented keys. No generation is wasted on a dummy
step, which the default NEXT_STEP mode would require.

All sub-envs draw from one shared episode order, so a batch never repeats an example within an epoch.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .base import TEXT_KEYS, AlpacaFarmEnvBase, EpisodeConfig, check_render_mode, row_observation
from .spaces import UnicodeText
from .text_env import DEFAULT_MAX_TEXT_LENGTH, text_observation_space


def batch_infos(infos: Sequence[dict[str, Any] | None], num_envs: int) -> dict[str, Any]:
    """Per-env info dicts -> Gymnasium's vector info layout: ``info[key]`` an array over envs, ``info["_key"]`` the
    mask of envs that have it; nested dicts recurse. Arrays are typed from all values at once (bool, int64, float64,
    else object), so a ``None`` in one env never breaks a numeric column."""
    keys: list[str] = []
    for d in infos:
        for k in d or {}:
            if k not in keys:
                keys.append(k)
    out: dict[str, Any] = {}
    for k in keys:
        mask = np.array([d is not None and k in d for d in infos], dtype=np.bool_)
        vals = [d[k] if d is not None and k in d else None for d in infos]
        present = [v for v, m in zip(vals, mask) if m]
        if present and all(isinstance(v, dict) for v in present):
            out[k] = batch_infos([v if m else None for v, m in zip(vals, mask)], num_envs)
        else:
            out[k] = _column(vals, mask)
        out[f"_{k}"] = mask
    return out


def _column(vals: list[Any], mask: np.ndarray) -> np.ndarray:
    present = [v for v, m in zip(vals, mask) if m]
    if present and all(isinstance(v, (bool, np.bool_)) for v in present):
        return np.array([bool(v) if m else False for v, m in zip(vals, mask)], dtype=np.bool_)
    if present and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in present):
        return np.array([int(v) if m else 0 for v, m in zip(vals, mask)], dtype=np.int64)
    if present and all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) for v in present):
        return np.array([float(v) if m else 0.0 for v, m in zip(vals, mask)], dtype=np.float64)
    arr = np.full(len(vals), None, dtype=object)
    for i, (v, m) in enumerate(zip(vals, mask)):
        if m:
            arr[i] = v
    return arr


class AlpacaFarmVectorEnv(AlpacaFarmEnvBase[dict, Sequence[str]], VectorEnv):
    """``num_envs`` AlpacaFarm text episodes at once (the keyword arguments of :class:`AlpacaFarmEnv`).

    Spaces: ``single_observation_space`` / ``single_action_space`` are :class:`AlpacaFarmEnv`'s;
    ``observation_space`` / ``action_space`` their ``batch_space`` (observations are ``{"instruction": tuple[str, ...],
    "input": ..., "prompt": ...}``, actions a sequence of ``num_envs`` strings). Episodes end after one step and the
    env autoresets in the same step.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    batched = True

    def __init__(self, num_envs: int = 1, reward: Any = "annotator", reward_kwargs: dict[str, Any] | None = None, *,
                 max_text_length: int = DEFAULT_MAX_TEXT_LENGTH, max_response_length: int = DEFAULT_MAX_TEXT_LENGTH,
                 render_mode: str | None = None, **episodes: Any):
        check_render_mode(self, render_mode)
        self._setup(EpisodeConfig.of(self, episodes), None, num_envs, reward, reward_kwargs, max_text_length,
                    max_response_length)

    def _setup(self, config: EpisodeConfig, rows: list[dict[str, Any]] | None, num_envs: int, reward: Any,
               reward_kwargs: dict[str, Any] | None, max_text_length: int, max_response_length: int) -> None:
        self.num_envs = check_num_envs(num_envs)
        super().__init__(config, rows)
        self._use_reward(reward, reward_kwargs)
        self.single_observation_space = text_observation_space(max_text_length)
        self.single_action_space = UnicodeText(max_response_length, min_length=0)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    @classmethod
    def from_env(cls, env: Any, rows: Sequence[dict[str, Any]], num_envs: int, *, reward: Any = None,
                 reward_kwargs: dict[str, Any] | None = None, seed: int | None = None) -> "AlpacaFarmVectorEnv":
        """A vector env over ``rows`` -- a selection of the rows of ``env`` (an ``AlpacaFarm-v0`` env, single or
        vector, wrapped or not), e.g. one process's shard of the prompts -- with ``env``'s split, reference, data dir,
        seed mode and spaces, and ``reward`` (default: ``env``'s). An agent that scores with a reward built after its
        env was made (the trained reward model) uses this: it still learns from the env it received and never reads
        the data dir. Episodes come in row order (no shuffling)."""
        base = getattr(env, "unwrapped", env)
        if not isinstance(base, AlpacaFarmEnvBase) or not hasattr(base, "reward_spec"):
            raise TypeError(f"{type(env).__name__} is not an AlpacaFarm-v0 env (gym.make / gym.make_vec('AlpacaFarm-v0'))")
        if reward is None:
            reward, reward_kwargs = base.reward_spec, base.reward_kwargs
        obs_space = getattr(base, "single_observation_space", None) or base.observation_space
        act_space = getattr(base, "single_action_space", None) or base.action_space
        config = EpisodeConfig(split=base.split, data_dir=base.data_dir, reference=base.reference, shuffle=False,
                               seed=seed, seed_mode=base.seed_mode)
        vec = cls.__new__(cls)
        vec._setup(config, list(rows), num_envs, reward, reward_kwargs, obs_space["prompt"].max_length,
                   act_space.max_length)
        return vec

    def _begin(self, positions: list[int]) -> tuple[dict[str, tuple[str, ...]], dict[str, Any]]:
        return batch_observations([self.rows[p] for p in positions]), self._batch_infos(positions)

    def _batch_infos(self, positions: Sequence[int]) -> dict[str, Any]:
        return batch_infos([self._row_info(self.rows[p]) for p in positions], self.num_envs)

    def _check_actions(self, actions: Any) -> list[str]:
        # only ordered containers: list() of a dict or a set would score its keys, in no defined order
        if not isinstance(actions, (list, tuple, np.ndarray)):
            raise TypeError(
                f"actions must be a list, tuple or numpy array of {self.num_envs} response strings, "
                f"got {type(actions).__name__}"
            )
        responses = list(actions)
        if len(responses) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} responses, got {len(responses)}")
        for i, r in enumerate(responses):
            if not isinstance(r, str):
                raise TypeError(f"response {i} is {type(r).__name__}, expected str")
            if len(r) > self.single_action_space.max_length:
                raise ValueError(f"response {i} has {len(r)} characters > max_response_length")
        return responses

    def step(self, actions: Sequence[str]) -> tuple[dict[str, tuple[str, ...]], np.ndarray, np.ndarray, np.ndarray,
                                                    dict[str, Any]]:
        """Score ``num_envs`` responses in ONE batched reward call (each episode its own reward seed), then start
        the next episodes (same-step autoreset).

        Returns:
            observations: the NEXT prompts.
            rewards: ``float64[num_envs]``, the backend's scores.
            terminations: all ``True``. truncations: all ``False``.
            infos: the new episodes' ``example_index`` / ``dataset``, and under ``final_obs`` / ``final_info`` the
            finished episodes' observations and infos (``reference_output``, ``response_length``, the backend's
            details), each with its ``_key`` mask.
        """
        if self._current is None:
            raise RuntimeError("call reset() before step()")
        responses = self._check_actions(actions)
        rows = [self.rows[p] for p in self._current]
        scores, final_infos = self._score(rows, responses)
        return autoreset_step(self, rows, scores, final_infos)

    def __repr__(self) -> str:
        return f"AlpacaFarmVectorEnv(split={self.split!r}, num_envs={self.num_envs})"


def check_num_envs(num_envs: int) -> int:
    """``num_envs`` as an int, refused below 1."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    return int(num_envs)


def batch_observations(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """The batched text observation of ``rows``: ``{"instruction": (...), "input": (...), "prompt": (...)}``."""
    return {k: tuple(r[k] for r in rows) for k in TEXT_KEYS}


def autoreset_step(env: Any, rows: Sequence[dict[str, Any]], rewards: Sequence[float],
                   final_infos: list[dict[str, Any]]) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The end of a vector step whose episodes all just ended (on ``rows``): every sub-env starts its next example
    now. Returns ``(next observations, rewards, terminations, truncations, infos)`` with the finished episodes under
    ``final_obs`` / ``final_info``."""
    n = env.num_envs
    final_obs = np.full(n, None, dtype=object)
    for i, row in enumerate(rows):
        final_obs[i] = row_observation(row)
    env._current = [env._order.next() for _ in range(n)]
    obs, infos = env._begin(env._current)
    infos["final_obs"], infos["_final_obs"] = final_obs, np.ones(n, dtype=np.bool_)
    infos["final_info"], infos["_final_info"] = batch_infos(final_infos, n), np.ones(n, dtype=np.bool_)
    return obs, np.asarray(rewards, dtype=np.float64), np.ones(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_), infos
