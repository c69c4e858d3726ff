"""``gym.make_vec("AlpacaFarm-v0", num_envs=N)``: N text episodes per step, scored with ONE batched reward call.

Episodes are a single step, so the env autoresets in the same step (Gymnasium 1.x ``AutoresetMode.SAME_STEP``): the
observations returned by ``step`` are already the next episodes' prompts, and the finished episodes' observations and
infos are under ``infos["final_obs"]`` (object array of observation dicts) and ``infos["final_info"]`` (a dict of
per-env arrays, each key with its ``_key`` mask), Gymnasium's documented keys. No generation is wasted on a dummy
step, which the default NEXT_STEP mode would require.

All sub-envs draw from one shared episode order, so a batch never repeats an example within an epoch.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .source import EpisodeSource, load_rows, score_rows
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


class AlpacaFarmVectorEnv(EpisodeSource, VectorEnv):
    """``num_envs`` AlpacaFarm text episodes at once (same keyword arguments as :class:`AlpacaFarmEnv`).

    ``step(actions)``: ``actions`` is a sequence of ``num_envs`` response strings. Returns the NEXT prompts (same-step
    autoreset), rewards ``float64[num_envs]``, ``terminations`` all True, ``truncations`` all False, and infos with
    ``final_obs`` / ``final_info`` (the finished episodes: ``reference_output``, ``response_length``, the backend's
    details) plus the new episodes' ``example_index`` / ``dataset``.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        split: str = "unlabeled",
        data_dir: str | os.PathLike | None = None,
        reward: Any = "annotator",
        reward_kwargs: dict[str, Any] | None = None,
        reference: str = "alpacafarm",
        indices: Sequence[int] | None = None,
        max_examples: int | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        max_text_length: int = DEFAULT_MAX_TEXT_LENGTH,
        max_response_length: int = DEFAULT_MAX_TEXT_LENGTH,
        render_mode: str | None = None,
    ):
        if render_mode is not None:
            raise ValueError("AlpacaFarmVectorEnv has no render modes")
        rows = load_rows(split, data_dir=data_dir, reference=reference, indices=indices, max_examples=max_examples)
        self._setup(rows, num_envs, split=split, reference=reference, reward=reward, reward_kwargs=reward_kwargs,
                    shuffle=shuffle, seed=seed, data_dir=data_dir, max_text_length=max_text_length,
                    max_response_length=max_response_length)

    def _setup(self, rows: list[dict[str, Any]], num_envs: int, *, split: str, reference: str, reward: Any,
               reward_kwargs: dict[str, Any] | None, shuffle: bool, seed: int | None, data_dir: Any,
               max_text_length: int, max_response_length: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.split, self.reference, self.data_dir = split, reference, data_dir
        self._init_source(rows, reward=reward, reward_kwargs=reward_kwargs, shuffle=shuffle, seed=seed, split=split,
                          data_dir=data_dir)
        self.single_observation_space = text_observation_space(max_text_length)
        self.single_action_space = UnicodeText(max_response_length, min_length=0)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._current: list[int] | None = None

    @classmethod
    def from_env(cls, env: Any, rows: Sequence[dict[str, Any]], num_envs: int, *, reward: Any = None,
                 reward_kwargs: dict[str, Any] | None = None, seed: int | None = None) -> "AlpacaFarmVectorEnv":
        """A vector env over ``rows`` -- a selection of the rows of ``env`` (an ``AlpacaFarm-v0`` env, single or
        vector, wrapped or not), e.g. one process's shard of the prompts -- with ``env``'s split, reference, data dir
        and spaces, and ``reward`` (default: ``env``'s). An agent that scores with a reward built after its env was
        made (the trained reward model) uses this: it still learns from the env it received and never reads the data
        dir. Episodes come in row order (no shuffling)."""
        base = getattr(env, "unwrapped", env)
        if not hasattr(base, "rows") or not hasattr(base, "reward_spec"):
            raise TypeError(f"{type(env).__name__} is not an AlpacaFarm-v0 env (gym.make / gym.make_vec('AlpacaFarm-v0'))")
        if reward is None:
            reward, reward_kwargs = base.reward_spec, {k: v for k, v in base.reward_kwargs.items() if k != "data_dir"}
        obs_space = getattr(base, "single_observation_space", None) or base.observation_space
        act_space = getattr(base, "single_action_space", None) or base.action_space
        vec = cls.__new__(cls)
        vec._setup(list(rows), num_envs, split=base.split, reference=base.reference, reward=reward,
                   reward_kwargs=reward_kwargs, shuffle=False, seed=seed, data_dir=getattr(base, "data_dir", None),
                   max_text_length=obs_space["prompt"].max_length, max_response_length=act_space.max_length)
        return vec

    def _obs(self, positions: Sequence[int]) -> dict[str, tuple[str, ...]]:
        return {k: tuple(self.rows[p][k] for p in positions) for k in ("instruction", "input", "prompt")}

    def _reset_infos(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        return [{"example_index": self.rows[p]["row_index"], "dataset": self.rows[p]["dataset"]} for p in positions]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        seed = self._begin_reset(seed)
        super().reset(seed=seed)
        self._after_seed(seed)
        options = options or {}
        if "index" in options:  # explicit examples, one position per sub-env
            idx = [int(i) for i in np.atleast_1d(options["index"])]
            if len(idx) != self.num_envs or not all(0 <= i < len(self.rows) for i in idx):
                raise ValueError(f"options['index'] needs {self.num_envs} positions in [0, {len(self.rows)})")
            self._current = idx
        else:
            self._current = [self._order.next() for _ in range(self.num_envs)]
        return self._obs(self._current), batch_infos(self._reset_infos(self._current), self.num_envs)

    def step(self, actions: Sequence[str]):
        if self._current is None:
            raise RuntimeError("call reset() before step()")
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
        rows = [self.rows[p] for p in self._current]
        backend = self.reward_backend
        # the ONE batched reward call of this step; each episode its own reward seed
        scores, details = score_rows(backend, rows, responses, self._episode_seeds(self.num_envs))
        name = str(getattr(backend, "name", type(backend).__name__))
        final_infos, final_obs = [], np.full(self.num_envs, None, dtype=object)
        for i, (row, resp, det) in enumerate(zip(rows, responses, details)):
            info = copy.deepcopy(dict(det))
            info.update(
                reference_output=row["reference_output"], response_length=len(resp),
                example_index=row["row_index"], dataset=row["dataset"], reward_backend=name,
            )
            final_infos.append(info)
            final_obs[i] = {"instruction": row["instruction"], "input": row["input"], "prompt": row["prompt"]}
        # same-step autoreset: every episode just ended, so every sub-env starts its next example now
        self._current = [self._order.next() for _ in range(self.num_envs)]
        infos = batch_infos(self._reset_infos(self._current), self.num_envs)
        infos["final_obs"], infos["_final_obs"] = final_obs, np.ones(self.num_envs, dtype=np.bool_)
        infos["final_info"], infos["_final_info"] = batch_infos(final_infos, self.num_envs), np.ones(self.num_envs, dtype=np.bool_)
        rewards = np.asarray(scores, dtype=np.float64)
        terminations = np.ones(self.num_envs, dtype=np.bool_)
        truncations = np.zeros(self.num_envs, dtype=np.bool_)
        return self._obs(self._current), rewards, terminations, truncations, infos

    def __repr__(self) -> str:
        return f"AlpacaFarmVectorEnv(split={self.split!r}, num_envs={self.num_envs})"
