"""``AlpacaFarm-v0``: one instruction is one episode; the action is the whole response text.

AlpacaFarm's RLHF setting (Dubois et al., 2023, Sec. 3 and App. C) is a contextual bandit: a prompt is drawn from
the instruction split, the policy writes a response, and a reward (a reward model or a simulated pairwise annotator
against the Davinci003 reference) scores it. This env exposes exactly that loop with text in and text out.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import gymnasium as gym
from gymnasium import spaces

from .source import EpisodeSource, load_rows, score_rows
from .spaces import UnicodeText

DEFAULT_MAX_TEXT_LENGTH = 8192  # characters; the longest eval-set prompt is ~2.1k, the longest reference ~1.6k


def text_observation_space(max_text_length: int) -> spaces.Dict:
    return spaces.Dict(
        {
            "instruction": UnicodeText(max_text_length, min_length=1),
            "input": UnicodeText(max_text_length, min_length=0),
            "prompt": UnicodeText(max_text_length, min_length=1),
        }
    )


class AlpacaFarmEnv(EpisodeSource, gym.Env[dict, str]):
    """Text-level AlpacaFarm env (``gym.make("AlpacaFarm-v0", ...)``).

    Observation: ``{"instruction", "input", "prompt"}`` strings (``prompt`` is the AlpacaFarm template).
    Action: the response string. ``step`` always ends the episode (``terminated=True``) and returns the reward of the
    configured backend; ``info`` has ``reference_output``, ``response_length`` (characters), ``example_index``,
    ``dataset``, ``reward_backend`` and every per-example detail of the backend (``score``, and for annotators
    ``preference``, ``annotator``, ``cost``, ``from_cache``, ...).

    Keyword arguments: see docs/envs.md. ``reward`` is a reward spec (registered name, ``"module:attr"``, class,
    function or instance); string specs are built lazily on the first ``step`` and shared in the process, but an
    unknown name (reward, or ``reward_kwargs["annotator"]``) raises at construction.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}  # fps: only to satisfy the render checker

    def __init__(
        self,
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
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.split, self.reference, self.data_dir = split, reference, data_dir
        rows = load_rows(split, data_dir=data_dir, reference=reference, indices=indices, max_examples=max_examples)
        too_long = [r["row_index"] for r in rows if len(r["prompt"]) > max_text_length]
        if too_long:
            raise ValueError(
                f"{len(too_long)} prompts of split {split!r} exceed max_text_length={max_text_length} characters "
                f"(e.g. row {too_long[0]}); raise max_text_length"
            )
        self._init_source(rows, reward=reward, reward_kwargs=reward_kwargs, shuffle=shuffle, seed=seed, split=split,
                          data_dir=data_dir)
        self.observation_space = text_observation_space(max_text_length)
        self.action_space = UnicodeText(max_response_length, min_length=0)
        self._current: int | None = None
        self._done = True
        self._last: tuple[dict[str, Any], str, float] | None = None

    # -------------------------------------------------------------------------------------------------- helpers
    @property
    def current_row(self) -> dict[str, Any] | None:
        return None if self._current is None else self.rows[self._current]

    def _obs(self, row: dict[str, Any]) -> dict[str, str]:
        return {"instruction": row["instruction"], "input": row["input"], "prompt": row["prompt"]}

    def _reset_info(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"example_index": row["row_index"], "dataset": row["dataset"]}

    def _check_action(self, action: Any) -> str:
        if not isinstance(action, str):
            raise TypeError(f"the action is the response text (str), got {type(action).__name__}")
        if len(action) > self.action_space.max_length:
            raise ValueError(
                f"response of {len(action)} characters exceeds max_response_length={self.action_space.max_length}"
            )
        return action

    # -------------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        seed = self._begin_reset(seed)
        super().reset(seed=seed)
        self._after_seed(seed)
        options = options or {}
        if "index" in options:  # a specific example (position in this env's selection), order untouched
            k = int(options["index"])
            if not 0 <= k < len(self.rows):
                raise IndexError(f"options['index']={k} out of range for {len(self.rows)} examples")
            self._current = k
        else:
            self._current = self._order.next()
        self._done = False
        row = self.rows[self._current]
        return self._obs(row), self._reset_info(row)

    def step(self, action: str):
        if self._current is None or self._done:
            raise RuntimeError("call reset() before step(): each AlpacaFarm episode is a single step")
        response = self._check_action(action)
        row = self.rows[self._current]
        scores, details = score_rows(self.reward_backend, [row], [response], self._episode_seeds(1))
        reward = scores[0]
        self._done = True
        self._last = (row, response, reward)
        info = self._step_info(row, response, details[0])
        return self._obs(row), reward, True, False, info

    def _step_info(self, row: dict[str, Any], response: str, detail: dict[str, Any]) -> dict[str, Any]:
        info = copy.deepcopy(dict(detail))  # never hand out the backend's own objects
        info.update(
            reference_output=row["reference_output"],
            response_length=len(response),
            example_index=row["row_index"],
            dataset=row["dataset"],
            reward_backend=str(getattr(self.reward_backend, "name", type(self.reward_backend).__name__)),
        )
        return info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._current is None:
            return ""
        if self._last is not None and self._done:
            row, response, reward = self._last
            return f"{row['prompt']} {response}\n[reward={reward:.4f}]"
        return self.rows[self._current]["prompt"]
