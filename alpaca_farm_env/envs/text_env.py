"""``AlpacaFarm-v0``: one instruction is one episode; the action is the whole response text.

AlpacaFarm's RLHF setting (Dubois et al., 2023, Sec. 3 and App. C) is a contextual bandit: a prompt is drawn from
the instruction split, the policy writes a response, and a reward (a reward model or a simulated pairwise annotator
against the Davinci003 reference) scores it. This env exposes exactly that loop with text in and text out.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium import spaces

from .base import (AlpacaFarmEnvBase, EpisodeConfig, check_gymnasium_vectorization, check_render_mode,
                   row_observation)
from .spaces import UnicodeText

DEFAULT_MAX_TEXT_LENGTH = 8192  # characters; the longest eval-set prompt is ~2.1k, the longest reference ~1.6k


def text_observation_space(max_text_length: int) -> spaces.Dict:
    """``Dict(instruction, input, prompt)`` of :class:`UnicodeText` up to ``max_text_length`` characters."""
    return spaces.Dict(
        {
            "instruction": UnicodeText(max_text_length, min_length=1),
            "input": UnicodeText(max_text_length, min_length=0),
            "prompt": UnicodeText(max_text_length, min_length=1),
        }
    )


class AlpacaFarmEnv(AlpacaFarmEnvBase[dict, str], gym.Env[dict, str]):
    """Text-level AlpacaFarm env (``gym.make("AlpacaFarm-v0", ...)``).

    Observation space: ``Dict(instruction=UnicodeText(max_text_length, min_length=1), input=UnicodeText(...,
    min_length=0), prompt=UnicodeText(..., min_length=1))``; ``prompt`` is the AlpacaFarm template.
    Action space: ``UnicodeText(max_response_length)``, the response string.
    ``step`` always ends the episode (``terminated=True``) and returns the reward of the configured backend.

    Keyword arguments: ``reward`` (a reward spec: registered name, ``"module:attr"``, class, function or instance;
    string specs are built lazily on the first ``step`` and shared in the process, but an unknown name -- reward, or
    ``reward_kwargs["annotator"]`` -- raises at construction), ``reward_kwargs``, ``max_text_length``,
    ``max_response_length``, ``render_mode`` (``None`` or ``"ansi"``), and the :class:`EpisodeConfig` fields
    (``split`` or ``prompts``, ``data_dir``, ``reference``, ``indices``, ``max_examples``, ``shuffle``, ``seed``,
    ``seed_mode``);
    see docs/envs.md.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}  # fps: only to satisfy the render checker

    def __init__(self, reward: Any = "annotator", reward_kwargs: dict[str, Any] | None = None, *,
                 max_text_length: int = DEFAULT_MAX_TEXT_LENGTH, max_response_length: int = DEFAULT_MAX_TEXT_LENGTH,
                 render_mode: str | None = None, **episodes: Any):
        check_render_mode(self, render_mode)
        check_gymnasium_vectorization(self)
        super().__init__(EpisodeConfig.of(self, episodes))
        check_prompt_lengths(self.rows, max_text_length, self.split)
        self._use_reward(reward, reward_kwargs)
        self.observation_space = text_observation_space(max_text_length)
        self.action_space = UnicodeText(max_response_length, min_length=0)
        self._done = True
        self._last: tuple[dict[str, Any], str, float] | None = None

    def _begin(self, positions: list[int]) -> tuple[dict[str, str], dict[str, Any]]:
        self._done, self._last = False, None
        row = self.rows[positions[0]]
        return row_observation(row), self._row_info(row)

    def _check_action(self, action: Any) -> str:
        if not isinstance(action, str):
            raise TypeError(f"the action is the response text (str), got {type(action).__name__}")
        if len(action) > self.action_space.max_length:
            raise ValueError(
                f"response of {len(action)} characters exceeds max_response_length={self.action_space.max_length}"
            )
        return action

    def step(self, action: str) -> tuple[dict[str, str], float, bool, bool, dict[str, Any]]:
        """Score the response ``action`` to the current prompt; the episode ends.

        Returns:
            observation: the same prompt (the episode is over; call ``reset``).
            reward: the backend's score of (prompt, response).
            terminated: always ``True``. truncated: always ``False``.
            info: the backend's details (always ``score``; annotators add ``preference``, ``probability``,
            ``annotator``, ``labeled``, ``cost``, ...), ``reference_output``, ``response_length`` (characters),
            ``example_index``, ``dataset`` and ``reward_backend``.
        """
        if self._current is None or self._done:
            raise RuntimeError("call reset() before step(): each AlpacaFarm episode is a single step")
        response = self._check_action(action)
        row = self.rows[self._current[0]]
        scores, infos = self._score([row], [response])
        self._done = True
        self._last = (row, response, scores[0])
        return row_observation(row), scores[0], True, False, infos[0]

    def render(self) -> str | None:
        """``"ansi"``: the prompt, and after ``step`` the response and its reward; else ``None``."""
        if self.render_mode != "ansi":
            return None
        if self._current is None:
            return ""
        if self._last is not None and self._done:
            row, response, reward = self._last
            return f"{row['prompt']} {response}\n[reward={reward:.4f}]"
        return self.rows[self._current[0]]["prompt"]


def check_prompt_lengths(rows: list[dict[str, Any]], max_text_length: int, split: str) -> None:
    """Refuse rows whose prompt is longer than the observation space admits."""
    too_long = [r["row_index"] for r in rows if len(r["prompt"]) > max_text_length]
    if too_long:
        raise ValueError(
            f"{len(too_long)} prompts of split {split!r} exceed max_text_length={max_text_length} characters "
            f"(e.g. row {too_long[0]}); raise max_text_length"
        )
