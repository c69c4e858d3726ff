"""``AlpacaFarmPairwise-v0``: the pairwise-feedback env, a dueling bandit -- what AlpacaFarm's annotators and human
labellers actually answer.

One instruction is one episode, as in ``AlpacaFarm-v0``; the action is a pair of responses, and the annotator says
which it prefers. ``gym.make_vec("AlpacaFarmPairwise-v0", num_envs=N)`` makes one batched annotation call per step.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ..annotators.base import Annotation, preference_score
from .base import (AlpacaFarmEnvBase, EpisodeConfig, check_gymnasium_vectorization, check_render_mode,
                   row_observation)
from .spaces import UnicodeText
from .text_env import DEFAULT_MAX_TEXT_LENGTH, text_observation_space
from .vector_env import autoreset_step, batch_infos, batch_observations, check_num_envs


def reward_of(a: Annotation) -> float:
    """The pairwise reward: P(the SECOND response preferred) read from the label -- 1.0 when the second wins, 0.0
    when the first does, 0.5 for a draw or no label (the sign convention of the annotator reward, where the policy's
    response is the second output; :func:`~alpaca_farm_env.annotators.preference_score`)."""
    return preference_score(a)


def info_of(a: Annotation) -> dict[str, Any]:
    """The step info of an annotation."""
    return {"preference": a.preference, "probability": a.probability, "annotator": a.annotator,
            "is_noisy_label": a.is_noisy_label, "labeled": a.preference is not None, "cost": a.cost,
            "extra": copy.deepcopy(dict(a.extra))}


def _check_pair(action: Any, max_length: int, where: str = "the action") -> tuple[str, str]:
    if not isinstance(action, (tuple, list)) or len(action) != 2:
        raise TypeError(f"{where} is a pair of two response strings, got {type(action).__name__}")
    for k, r in enumerate(action):
        if not isinstance(r, str):
            raise TypeError(f"{where}[{k}] is {type(r).__name__}, expected str")
        if len(r) > max_length:
            raise ValueError(f"{where}[{k}] has {len(r)} characters > max_response_length={max_length}")
    return str(action[0]), str(action[1])


def _pair_space(max_response_length: int) -> spaces.Tuple:
    return spaces.Tuple((UnicodeText(max_response_length), UnicodeText(max_response_length)))


class AlpacaFarmPairwiseEnv(AlpacaFarmEnvBase[dict, tuple], gym.Env[dict, tuple]):
    """Pairwise feedback on one instruction per episode (``gym.make("AlpacaFarmPairwise-v0", ...)``).

    Observation space: as ``AlpacaFarm-v0``, ``Dict(instruction, input, prompt)`` of ``UnicodeText``.
    Action space: ``Tuple(UnicodeText(max_response_length), UnicodeText(max_response_length))``, two responses.
    Reward: P(the second response preferred) by the annotator's label: 1.0 (second), 0.0 (first), 0.5 (a draw or an
    unlabeled pair) -- the package's one sign convention (docs/envs.md). ``step`` always terminates.

    Keyword arguments: ``annotator`` (default ``"noisy_pooled"``, AlpacaFarm's simulated labeller pool),
    ``annotator_kwargs`` (``seed`` in it offsets every comparison's seed), ``max_text_length``,
    ``max_response_length``, and the :class:`EpisodeConfig` fields (``split``, default ``"preference"``,
    ``data_dir``, ``reference``, ``indices``, ``max_examples``, ``shuffle``, ``seed``, ``seed_mode``:
    ``"episode"``, fresh noise and member on every episode, or ``"instruction"``, alpaca_eval's instruction-keyed
    draws for a dataset annotated once, e.g. preference collection).
    """

    metadata = {"render_modes": []}

    def __init__(self, annotator: Any = "noisy_pooled", annotator_kwargs: dict[str, Any] | None = None, *,
                 max_text_length: int = DEFAULT_MAX_TEXT_LENGTH, max_response_length: int = DEFAULT_MAX_TEXT_LENGTH,
                 **episodes: Any):
        check_gymnasium_vectorization(self)
        super().__init__(EpisodeConfig.of(self, episodes, split="preference"))
        self._use_annotator(annotator, annotator_kwargs)
        self.observation_space = text_observation_space(max_text_length)
        self.action_space = _pair_space(max_response_length)
        self._max_response_length = max_response_length
        self._done = True

    def _begin(self, positions: list[int]) -> tuple[dict[str, str], dict[str, Any]]:
        self._done = False
        row = self.rows[positions[0]]
        return row_observation(row), self._row_info(row)

    def step(self, action: tuple[str, str]) -> tuple[dict[str, str], float, bool, bool, dict[str, Any]]:
        """Have the annotator compare the pair ``action = (first, second)``; the episode ends.

        Returns:
            observation: the same prompt (the episode is over; call ``reset``).
            reward: P(second preferred) by the label: 1.0, 0.0, or 0.5 for a draw or an unlabeled pair.
            terminated: always ``True``. truncated: always ``False``.
            info: ``preference`` (1, 2 or 1.5, alpaca_eval's encoding with output_1 = the first response; ``None``
            unlabeled), ``probability`` (P(second better), where the annotator has one), ``annotator`` (the pool
            member that answered), ``is_noisy_label``, ``labeled``, ``cost``, ``extra``, ``example_index``,
            ``dataset``.
        """
        if self._current is None or self._done:
            raise RuntimeError("call reset() before step(): each AlpacaFarm episode is a single step")
        first, second = _check_pair(action, self._max_response_length)
        row = self.rows[self._current[0]]
        a = self._compare([row], [first], [second])[0]
        self._done = True
        return row_observation(row), reward_of(a), True, False, {**info_of(a), **self._row_info(row)}


class AlpacaFarmPairwiseVectorEnv(AlpacaFarmEnvBase[dict, Any], VectorEnv):
    """``gym.make_vec("AlpacaFarmPairwise-v0", num_envs=N)``: N comparisons per step in ONE annotation call, with
    same-step autoreset (finished episodes under ``infos["final_obs"]`` / ``infos["final_info"]``), as the vector
    ``AlpacaFarm-v0``. Spaces: :class:`AlpacaFarmPairwiseEnv`'s, batched (``batch_space``). ``step(actions)``: a
    sequence of N pairs (or a pair of N-sequences, Gymnasium's batched ``Tuple`` layout)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    batched = True

    def __init__(self, num_envs: int = 1, annotator: Any = "noisy_pooled",
                 annotator_kwargs: dict[str, Any] | None = None, *, max_text_length: int = DEFAULT_MAX_TEXT_LENGTH,
                 max_response_length: int = DEFAULT_MAX_TEXT_LENGTH, render_mode: str | None = None,
                 **episodes: Any):
        self.num_envs = check_num_envs(num_envs)
        check_render_mode(self, render_mode)
        super().__init__(EpisodeConfig.of(self, episodes, split="preference"))
        self._use_annotator(annotator, annotator_kwargs)
        self.single_observation_space = text_observation_space(max_text_length)
        self.single_action_space = _pair_space(max_response_length)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._max_response_length = max_response_length

    def _begin(self, positions: list[int]) -> tuple[dict[str, tuple[str, ...]], dict[str, Any]]:
        rows = [self.rows[p] for p in positions]
        return batch_observations(rows), batch_infos([self._row_info(r) for r in rows], self.num_envs)

    def _pairs(self, actions: Any) -> list[tuple[str, str]]:
        if isinstance(actions, tuple) and len(actions) == 2 and self.num_envs != 2 and all(
                isinstance(a, (list, tuple, np.ndarray)) and len(a) == self.num_envs for a in actions):
            actions = list(zip(*actions))  # Gymnasium's batched Tuple layout: (firsts, seconds)
        if not isinstance(actions, (list, tuple, np.ndarray)) or len(actions) != self.num_envs:
            raise TypeError(f"actions must be a sequence of {self.num_envs} response pairs, got "
                            f"{type(actions).__name__}" + (f" of length {len(actions)}" if hasattr(actions, "__len__") else ""))
        return [_check_pair(a, self._max_response_length, f"actions[{i}]") for i, a in enumerate(actions)]

    def step(self, actions: Sequence[tuple[str, str]]) -> tuple[dict[str, tuple[str, ...]], np.ndarray, np.ndarray,
                                                                np.ndarray, dict[str, Any]]:
        """Compare ``num_envs`` pairs in ONE annotation call, then start the next episodes (same-step autoreset).

        Returns:
            observations: the NEXT prompts.
            rewards: ``float64[num_envs]``, P(second preferred) by each label (1.0, 0.0, 0.5).
            terminations: all ``True``. truncations: all ``False``.
            infos: the new episodes' ``example_index`` / ``dataset``; ``final_obs`` / ``final_info`` the finished
            episodes' observations and infos (those of :meth:`AlpacaFarmPairwiseEnv.step`).
        """
        if self._current is None:
            raise RuntimeError("call reset() before step()")
        pairs = self._pairs(actions)
        rows = [self.rows[p] for p in self._current]
        anns = self._compare(rows, [a for a, _ in pairs], [b for _, b in pairs])  # the ONE annotation call
        final_infos = [{**info_of(a), **self._row_info(row)} for row, a in zip(rows, anns)]
        return autoreset_step(self, rows, [reward_of(a) for a in anns], final_infos)
