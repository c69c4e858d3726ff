"""``AlpacaFarmToken-v0``: the token-level MDP of RLHF.

State: the (left-padded) prompt ids and the response generated so far. Action: the next token id. The episode ends
with ``terminated=True`` when the policy emits an EOS token, or ``truncated=True`` after ``max_new_tokens`` tokens.
The reward is 0 on every step but the last, where it is the text reward backend's score of the decoded response
(special tokens skipped), so the policy's tokenizer and the reward model's never have to match.

Prompt handling follows AlpacaFarm's ``QueryResponseDataset`` (tatsu-lab/alpaca_farm, src/alpaca_farm/
data_preprocessor.py): prompts are tokenized with special tokens and without truncation, prompts longer than
``query_len`` are filtered out, the rest are left-padded with the pad id and masked where ``id != pad``. Defaults
``max_prompt_tokens=192`` / ``max_new_tokens=300`` are AlpacaFarm's PPO ``query_len`` / ``response_len``.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .base import AlpacaFarmEnvBase, EpisodeConfig, check_render_mode

PROMPT_OVERFLOW = ("filter", "truncate")


def resolve_tokenizer(tokenizer: Any) -> Any:
    """``None`` or ``"byte"``: the package's byte tokenizer; any other string: ``models.load_policy(spec).tokenizer``;
    an object with ``.tokenizer`` (a :class:`~alpaca_farm_env.models.Policy`): its tokenizer; else used as is."""
    if tokenizer is None or tokenizer == "byte":
        from ..models import byte_tokenizer

        return byte_tokenizer()
    if isinstance(tokenizer, str):
        from ..models import load_policy

        return load_policy(tokenizer).tokenizer
    if hasattr(tokenizer, "tokenizer") and hasattr(tokenizer, "model"):
        return tokenizer.tokenizer
    for attr in ("decode", "__call__"):
        if not hasattr(tokenizer, attr):
            raise TypeError(f"tokenizer {type(tokenizer).__name__} lacks {attr}(); pass a Hugging Face tokenizer")
    return tokenizer


def _token_id(action: Any) -> int:
    """The action as a token id. Only integers: ``int(action)`` would take 65.7, "65" or True as a token."""
    value = action[()] if isinstance(action, np.ndarray) and action.shape == () else action  # SB3 may pass 0-d arrays
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise TypeError(
        f"the action is a token id (int, numpy integer or 0-d integer array), got {type(action).__name__} {action!r}"
    )


class AlpacaFarmTokenEnv(AlpacaFarmEnvBase[dict, int], gym.Env[dict, int]):
    """Token-level AlpacaFarm env (``gym.make("AlpacaFarmToken-v0", ...)``).

    Observation space (``spaces.Dict`` of int64 ``Box``es, fixed shapes):
      ``prompt_ids`` ``(max_prompt_tokens,)`` left-padded with ``pad_token_id``; ``prompt_mask`` 1 on real tokens;
      ``response_ids`` ``(max_new_tokens,)`` the tokens generated so far, right-padded; ``response_mask`` 1 on them.
    Action space: ``Discrete(vocab_size)``, ``vocab_size = len(tokenizer)``.
    Keyword arguments: ``reward``, ``reward_kwargs`` and ``render_mode`` as :class:`~alpaca_farm_env.envs.text_env.
    AlpacaFarmEnv`, the :class:`EpisodeConfig` fields, and ``tokenizer``, ``max_prompt_tokens``, ``max_new_tokens``,
    ``prompt_overflow``, ``eos_token_ids``, ``truncated_reward``, ``token_info``; see docs/envs.md.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}  # fps: only to satisfy the render checker

    def __init__(self, reward: Any = "annotator", reward_kwargs: dict[str, Any] | None = None, *,
                 tokenizer: Any = None, max_prompt_tokens: int = 192, max_new_tokens: int = 300,
                 prompt_overflow: str = "filter", eos_token_ids: Sequence[int] | None = None,
                 truncated_reward: float | None = None, token_info: bool = False, render_mode: str | None = None,
                 **episodes: Any):
        check_render_mode(self, render_mode)
        if max_prompt_tokens < 1 or max_new_tokens < 1:
            raise ValueError("max_prompt_tokens and max_new_tokens must be >= 1")
        if prompt_overflow not in PROMPT_OVERFLOW:
            raise ValueError(f"prompt_overflow must be one of {PROMPT_OVERFLOW}, got {prompt_overflow!r}")
        self.tokenizer = tok = resolve_tokenizer(tokenizer)
        self.vocab_size = int(len(tok))
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        eos = list(eos_token_ids) if eos_token_ids is not None else [tok.eos_token_id]
        self.eos_token_ids = frozenset(int(i) for i in eos if i is not None)
        if not self.eos_token_ids:
            raise ValueError("no EOS token: the tokenizer has none; pass eos_token_ids")
        self.max_prompt_tokens, self.max_new_tokens = int(max_prompt_tokens), int(max_new_tokens)
        self.truncated_reward, self.token_info = truncated_reward, token_info
        config = EpisodeConfig.of(self, episodes)
        rows, ids = self._tokenize_prompts(config.load_rows(), prompt_overflow)
        super().__init__(config, rows)
        self._use_reward(reward, reward_kwargs)
        self._prompt_ids, self._prompt_mask = left_pad(ids, self.max_prompt_tokens, self.pad_token_id)
        if self._prompt_ids.max() >= self.vocab_size:
            raise ValueError("tokenizer produced ids >= len(tokenizer)")
        V, P, T = self.vocab_size, self.max_prompt_tokens, self.max_new_tokens
        self.observation_space = spaces.Dict({
            "prompt_ids": spaces.Box(0, V - 1, shape=(P,), dtype=np.int64),
            "prompt_mask": spaces.Box(0, 1, shape=(P,), dtype=np.int64),
            "response_ids": spaces.Box(0, V - 1, shape=(T,), dtype=np.int64),
            "response_mask": spaces.Box(0, 1, shape=(T,), dtype=np.int64),
        })
        self.action_space = spaces.Discrete(V)
        self._response: list[int] = []
        self._done = True
        self._last_text: str | None = None

    def _tokenize_prompts(self, rows: list[dict[str, Any]], prompt_overflow: str) -> tuple[list[dict], list[list[int]]]:
        """The rows whose prompt fits ``max_prompt_tokens`` (``"filter"``; counted in ``num_filtered``, with a
        warning) or cut to its last tokens (``"truncate"``), and their token ids."""
        ids = self.tokenizer([r["prompt"] for r in rows]).input_ids  # special tokens as the policy sees them
        kept, kept_ids, self.num_filtered = [], [], 0
        for row, x in zip(rows, ids):
            x = list(x)
            if len(x) > self.max_prompt_tokens:
                if prompt_overflow == "filter":
                    self.num_filtered += 1
                    continue
                row = {**row, "prompt_truncated": True}
                x = x[-self.max_prompt_tokens :]  # keep the end: it holds "### Response:"
            kept.append(row)
            kept_ids.append(x)
        if not kept:
            raise ValueError(f"all {len(rows)} prompts exceed max_prompt_tokens={self.max_prompt_tokens}; raise it "
                             "or pass prompt_overflow='truncate'")
        if self.num_filtered:
            warnings.warn(f"filtered out {self.num_filtered} of {len(rows)} prompts longer than max_prompt_tokens="
                          f"{self.max_prompt_tokens} (as AlpacaFarm's QueryResponseDataset does)", stacklevel=3)
        return kept, kept_ids

    def _obs(self) -> dict[str, np.ndarray]:
        n, k = len(self._response), self._current[0]
        response_ids = np.full(self.max_new_tokens, self.pad_token_id, dtype=np.int64)
        response_mask = np.zeros(self.max_new_tokens, dtype=np.int64)
        response_ids[:n] = self._response
        response_mask[:n] = 1
        return {"prompt_ids": self._prompt_ids[k].copy(), "prompt_mask": self._prompt_mask[k].copy(),
                "response_ids": response_ids, "response_mask": response_mask}

    def decode_response(self, token_ids: Sequence[int] | None = None) -> str:
        """The response text the reward backend sees: EOS dropped, special tokens skipped."""
        ids = [int(t) for t in (self._response if token_ids is None else token_ids) if int(t) not in self.eos_token_ids]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _begin(self, positions: list[int]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._response, self._done, self._last_text = [], False, None
        k = positions[0]
        row = self.rows[k]
        return self._obs(), {**self._row_info(row), "prompt_tokens": int(self._prompt_mask[k].sum()),
                             "prompt_truncated": bool(row.get("prompt_truncated", False))}

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Append the token ``action`` to the response.

        Returns:
            observation: the prompt and the response so far.
            reward: 0.0 until the episode ends; then the backend's score of the decoded response (or
            ``truncated_reward`` for a response cut at ``max_new_tokens``, when set).
            terminated: the token is an EOS id. truncated: ``max_new_tokens`` tokens generated without one.
            info: ``token_id`` / ``token_text`` with ``token_info=True``; at the end the text env's step info
            (backend details, ``reference_output``, ``response_length``, ``example_index``, ``dataset``,
            ``reward_backend``) plus ``response`` (the decoded text), ``response_tokens``, ``finished_with_eos``.
        """
        if self._current is None or self._done:
            raise RuntimeError("call reset() before step(): the episode has ended")
        token = _token_id(action)
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"action {token} outside Discrete({self.vocab_size})")
        self._response.append(token)
        terminated = token in self.eos_token_ids
        truncated = not terminated and len(self._response) >= self.max_new_tokens
        info: dict[str, Any] = {}
        if self.token_info:
            info.update(token_id=token, token_text=self.tokenizer.decode([token]))
        reward = 0.0
        if terminated or truncated:
            self._done = True
            text = self._last_text = self.decode_response()
            scores, infos = self._score([self.rows[self._current[0]]], [text])
            reward = scores[0]
            if truncated and self.truncated_reward is not None:
                reward = float(self.truncated_reward)  # e.g. AlpacaFarm-style penalty for responses without a stop
            info.update(infos[0])
            info.update(response=text, response_tokens=len(self._response), finished_with_eos=terminated)
        return self._obs(), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str | None:
        """``"ansi"``: the prompt and the response so far; else ``None``."""
        if self.render_mode != "ansi":
            return None
        if self._current is None:
            return ""
        return self.rows[self._current[0]]["prompt"] + " " + self.decode_response()


def left_pad(ids: list[list[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` left-padded to ``length`` with ``pad_id``, and the mask of real tokens (int64 arrays)."""
    out = np.full((len(ids), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), length), dtype=np.int64)
    for i, x in enumerate(ids):
        if x:
            out[i, length - len(x) :] = x
            mask[i, length - len(x) :] = 1
    return out, mask
