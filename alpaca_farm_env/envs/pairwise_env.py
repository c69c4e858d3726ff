"""``AlpacaFarmPairwise-v0``: the pairwise-feedback env, a dueling bandit -- what AlpacaFarm's annotators and human
labellers actually answer.

One instruction is one episode, as in ``AlpacaFarm-v0``; the action is a pair of responses, and the annotator says
which it prefers. ``gym.make_vec("AlpacaFarmPairwise-v0", num_envs=N)`` makes one batched annotation call per step.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ..annotators.base import Annotation
from .source import EpisodeSource, load_rows
from .spaces import UnicodeText
from .text_env import DEFAULT_MAX_TEXT_LENGTH, text_observation_space
from .vector_env import batch_infos

SEED_MODES = ("episode", "instruction")


def reward_of(a: Annotation) -> float:
    """+1 when the first response is preferred, -1 for the second, 0 for a draw or no label."""
    if a.preference is None:
        return 0.0
    return float(np.clip(2.0 * (1.5 - float(a.preference)), -1.0, 1.0))  # 1 -> +1, 2 -> -1, 1.5 -> 0


def info_of(a: Annotation) -> dict[str, Any]:
    return {"preference": a.preference, "probability": a.probability, "annotator": a.annotator,
            "is_noisy_label": a.is_noisy_label, "labeled": a.preference is not None, "cost": a.cost,
            "extra": copy.deepcopy(dict(a.extra))}


class _PairwiseSource(EpisodeSource):
    """The annotator, built lazily and shared like a reward backend (through the ``annotator`` reward, which carries
    the data dir and the seeds), and the seeds of a batch of comparisons."""

    def _init_pairwise(self, rows, *, annotator: Any, annotator_kwargs: dict[str, Any] | None, seed_mode: str,
                       shuffle: bool, seed: int | None, split: str, data_dir: Any) -> None:
        if seed_mode not in SEED_MODES:
            raise ValueError(f"seed_mode must be one of {SEED_MODES}, got {seed_mode!r}")
        self.seed_mode = seed_mode
        self._init_source(rows, reward="annotator", reward_kwargs={"annotator": annotator, **(annotator_kwargs or {})},
                          shuffle=shuffle, seed=seed, split=split, data_dir=data_dir)

    @property
    def annotator(self) -> Any:
        return self.reward_backend.annotator

    def _compare(self, rows: Sequence[dict[str, Any]], first: Sequence[str], second: Sequence[str]) -> list[Annotation]:
        episode = self._episode_seeds(len(rows)) if self.seed_mode == "episode" else None
        return self.annotator.compare([r["instruction"] for r in rows], [r["input"] for r in rows], list(first),
                                      list(second), seed=self.reward_backend.seeds_for(episode, len(rows)))


def _check_pair(action: Any, max_length: int, where: str = "the action") -> tuple[str, str]:
    if not isinstance(action, (tuple, list)) or len(action) != 2:
        raise TypeError(f"{where} is a pair of two response strings, got {type(action).__name__}")
    for k, r in enumerate(action):
        if not isinstance(r, str):
            raise TypeError(f"{where}[{k}] is {type(r).__name__}, expected str")
        if len(r) > max_length:
            raise ValueError(f"{where}[{k}] has {len(r)} characters > max_response_length={max_length}")
    return str(action[0]), str(action[1])


class AlpacaFarmPairwiseEnv(_PairwiseSource, gym.Env[dict, tuple]):
    """Pairwise feedback on one instruction per episode (``gym.make("AlpacaFarmPairwise-v0", ...)``).

    Observation: ``{"instruction", "input", "prompt"}`` strings, as ``AlpacaFarm-v0``.
    Action: ``Tuple(UnicodeText, UnicodeText)``, two responses to the prompt.
    Reward: +1 if the annotator prefers the first response, -1 if the second, 0 for a draw (or an unlabeled pair).
    ``step`` always terminates. ``info``: ``preference`` (1, 2 or 1.5; alpaca_eval's encoding with output_1 = the first
    response), ``probability`` (P(second better), where the annotator has one), ``annotator`` (the pool member that
    answered), ``is_noisy_label``, ``labeled``, ``example_index``, ``dataset``.

    Keyword arguments as ``AlpacaFarm-v0`` (``split``, ``data_dir``, ``reference``, ``indices``, ``max_examples``,
    ``shuffle``, ``seed``, ``max_text_length``, ``max_response_length``), plus ``annotator`` (default
    ``"noisy_pooled"``, AlpacaFarm's simulated labeller pool), ``annotator_kwargs``, and ``seed_mode``: ``"episode"``
    (default; fresh noise and member on every episode, from the env's seeded RNG) or ``"instruction"`` (alpaca_eval's
    instruction-keyed draws: the labels of a dataset annotated once, e.g. preference collection).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        split: str = "preference",
        data_dir: str | os.PathLike | None = None,
        annotator: Any = "noisy_pooled",
        annotator_kwargs: dict[str, Any] | None = None,
        seed_mode: str = "episode",
        reference: str = "alpacafarm",
        indices: Sequence[int] | None = None,
        max_examples: int | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        max_text_length: int = DEFAULT_MAX_TEXT_LENGTH,
        max_response_length: int = DEFAULT_MAX_TEXT_LENGTH,
    ):
        self.split, self.reference = split, reference
        rows = load_rows(split, data_dir=data_dir, reference=reference, indices=indices, max_examples=max_examples)
        self._init_pairwise(rows, annotator=annotator, annotator_kwargs=annotator_kwargs, seed_mode=seed_mode,
                            shuffle=shuffle, seed=seed, split=split, data_dir=data_dir)
        self.observation_space = text_observation_space(max_text_length)
        self.action_space = spaces.Tuple((UnicodeText(max_response_length), UnicodeText(max_response_length)))
        self._max_response_length = max_response_length
        self._current: int | None = None
        self._done = True

    def _obs(self, row: dict[str, Any]) -> dict[str, str]:
        return {"instruction": row["instruction"], "input": row["input"], "prompt": row["prompt"]}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        seed = self._begin_reset(seed)
        super().reset(seed=seed)
        self._after_seed(seed)
        options = options or {}
        if "index" in options:
            k = int(options["index"])
            if not 0 <= k < len(self.rows):
                raise IndexError(f"options['index']={k} out of range for {len(self.rows)} examples")
            self._current = k
        else:
            self._current = self._order.next()
        self._done = False
        row = self.rows[self._current]
        return self._obs(row), {"example_index": row["row_index"], "dataset": row["dataset"]}

    def step(self, action: tuple[str, str]):
        if self._current is None or self._done:
            raise RuntimeError("call reset() before step(): each AlpacaFarm episode is a single step")
        first, second = _check_pair(action, self._max_response_length)
        row = self.rows[self._current]
        a = self._compare([row], [first], [second])[0]
        self._done = True
        info = {**info_of(a), "example_index": row["row_index"], "dataset": row["dataset"]}
        return self._obs(row), reward_of(a), True, False, info


class AlpacaFarmPairwiseVectorEnv(_PairwiseSource, VectorEnv):
    """``gym.make_vec("AlpacaFarmPairwise-v0", num_envs=N)``: N comparisons per step in ONE annotation call, with
    same-step autoreset (finished episodes under ``infos["final_obs"]`` / ``infos["final_info"]``), as the vector
    ``AlpacaFarm-v0``. ``step(actions)``: a sequence of N pairs (or a pair of N-sequences, Gymnasium's batched
    ``Tuple`` layout)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, split: str = "preference", data_dir: str | os.PathLike | None = None,
                 annotator: Any = "noisy_pooled", annotator_kwargs: dict[str, Any] | None = None,
                 seed_mode: str = "episode", reference: str = "alpacafarm", indices: Sequence[int] | None = None,
                 max_examples: int | None = None, shuffle: bool = True, seed: int | None = None,
                 max_text_length: int = DEFAULT_MAX_TEXT_LENGTH, max_response_length: int = DEFAULT_MAX_TEXT_LENGTH,
                 render_mode: str | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode is not None:
            raise ValueError("AlpacaFarmPairwiseVectorEnv has no render modes")
        self.num_envs = num_envs
        self.split, self.reference = split, reference
        rows = load_rows(split, data_dir=data_dir, reference=reference, indices=indices, max_examples=max_examples)
        self._init_pairwise(rows, annotator=annotator, annotator_kwargs=annotator_kwargs, seed_mode=seed_mode,
                            shuffle=shuffle, seed=seed, split=split, data_dir=data_dir)
        self.single_observation_space = text_observation_space(max_text_length)
        self.single_action_space = spaces.Tuple((UnicodeText(max_response_length), UnicodeText(max_response_length)))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._max_response_length = max_response_length
        self._current: list[int] | None = None

    def _obs(self, positions: Sequence[int]) -> dict[str, tuple[str, ...]]:
        return {k: tuple(self.rows[p][k] for p in positions) for k in ("instruction", "input", "prompt")}

    def _infos(self, positions: Sequence[int]) -> dict[str, Any]:
        return batch_infos([{"example_index": self.rows[p]["row_index"], "dataset": self.rows[p]["dataset"]}
                            for p in positions], self.num_envs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        seed = self._begin_reset(seed)
        super().reset(seed=seed)
        self._after_seed(seed)
        options = options or {}
        if "index" in options:
            idx = [int(i) for i in np.atleast_1d(options["index"])]
            if len(idx) != self.num_envs or not all(0 <= i < len(self.rows) for i in idx):
                raise ValueError(f"options['index'] needs {self.num_envs} positions in [0, {len(self.rows)})")
            self._current = idx
        else:
            self._current = [self._order.next() for _ in range(self.num_envs)]
        return self._obs(self._current), self._infos(self._current)

    def _pairs(self, actions: Any) -> list[tuple[str, str]]:
        if isinstance(actions, tuple) and len(actions) == 2 and self.num_envs != 2 and all(
                isinstance(a, (list, tuple, np.ndarray)) and len(a) == self.num_envs for a in actions):
            actions = list(zip(*actions))  # Gymnasium's batched Tuple layout: (firsts, seconds)
        if not isinstance(actions, (list, tuple, np.ndarray)) or len(actions) != self.num_envs:
            raise TypeError(f"actions must be a sequence of {self.num_envs} response pairs, got "
                            f"{type(actions).__name__}" + (f" of length {len(actions)}" if hasattr(actions, "__len__") else ""))
        return [_check_pair(a, self._max_response_length, f"actions[{i}]") for i, a in enumerate(actions)]

    def step(self, actions: Any):
        if self._current is None:
            raise RuntimeError("call reset() before step()")
        pairs = self._pairs(actions)
        rows = [self.rows[p] for p in self._current]
        anns = self._compare(rows, [a for a, _ in pairs], [b for _, b in pairs])  # the ONE annotation call
        final_infos, final_obs = [], np.full(self.num_envs, None, dtype=object)
        for i, (row, a) in enumerate(zip(rows, anns)):
            final_infos.append({**info_of(a), "example_index": row["row_index"], "dataset": row["dataset"]})
            final_obs[i] = {"instruction": row["instruction"], "input": row["input"], "prompt": row["prompt"]}
        self._current = [self._order.next() for _ in range(self.num_envs)]
        infos = self._infos(self._current)
        infos["final_obs"], infos["_final_obs"] = final_obs, np.ones(self.num_envs, dtype=np.bool_)
        infos["final_info"], infos["_final_info"] = batch_infos(final_infos, self.num_envs), np.ones(self.num_envs, dtype=np.bool_)
        rewards = np.asarray([reward_of(a) for a in anns], dtype=np.float64)
        return (self._obs(self._current), rewards, np.ones(self.num_envs, dtype=np.bool_),
                np.zeros(self.num_envs, dtype=np.bool_), infos)
