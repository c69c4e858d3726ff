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

import copy
import os
import warnings
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .source import EpisodeSource, load_rows, score_rows

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


class AlpacaFarmTokenEnv(EpisodeSource, gym.Env[dict, int]):
    """Token-level AlpacaFarm env (``gym.make("AlpacaFarmToken-v0", ...)``).

    Observation (``spaces.Dict`` of int64 ``Box``es, fixed shapes):
      ``prompt_ids`` ``(max_prompt_tokens,)`` left-padded with ``pad_token_id``; ``prompt_mask`` 1 on real tokens;
      ``response_ids`` ``(max_new_tokens,)`` the tokens generated so far, right-padded; ``response_mask`` 1 on them.
    Action: ``Discrete(vocab_size)``, ``vocab_size = len(tokenizer)``.
    Final ``info``: ``response`` (decoded text), ``response_tokens``, ``finished_with_eos`` plus everything the text
    env's ``info`` has (``reference_output``, ``response_length``, backend details). With ``token_info=True`` every
    step's info also has ``token_id`` and ``token_text``.
    Other keyword arguments are those of :class:`~alpaca_farm_env.envs.text_env.AlpacaFarmEnv`; see docs/envs.md.
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
        tokenizer: Any = None,
        max_prompt_tokens: int = 192,
        max_new_tokens: int = 300,
        prompt_overflow: str = "filter",
        eos_token_ids: Sequence[int] | None = None,
        truncated_reward: float | None = None,
        token_info: bool = False,
        render_mode: str | None = None,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if max_prompt_tokens < 1 or max_new_tokens < 1:
            raise ValueError("max_prompt_tokens and max_new_tokens must be >= 1")
        if prompt_overflow not in PROMPT_OVERFLOW:
            raise ValueError(f"prompt_overflow must be one of {PROMPT_OVERFLOW}, got {prompt_overflow!r}")
        self.render_mode = render_mode
        self.tokenizer = resolve_tokenizer(tokenizer)
        tok = self.tokenizer
        self.vocab_size = int(len(tok))
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        eos = list(eos_token_ids) if eos_token_ids is not None else [tok.eos_token_id]
        self.eos_token_ids = frozenset(int(i) for i in eos if i is not None)
        if not self.eos_token_ids:
            raise ValueError("no EOS token: the tokenizer has none; pass eos_token_ids")
        self.max_prompt_tokens, self.max_new_tokens = int(max_prompt_tokens), int(max_new_tokens)
        self.truncated_reward = truncated_reward
        self.token_info = token_info

        rows = load_rows(split, data_dir=data_dir, reference=reference, indices=indices, max_examples=max_examples)
        ids = tok([r["prompt"] for r in rows]).input_ids  # special tokens as the policy sees them; no truncation
        kept, self.num_filtered = [], 0
        for row, x in zip(rows, ids):
            x = list(x)
            if len(x) > self.max_prompt_tokens:
                if prompt_overflow == "filter":
                    self.num_filtered += 1
                    continue
                row = {**row, "prompt_truncated": True}
                x = x[-self.max_prompt_tokens :]  # keep the end: it holds "### Response:"
            kept.append((row, x))
        if not kept:
            raise ValueError(
                f"all {len(rows)} prompts exceed max_prompt_tokens={self.max_prompt_tokens}; raise it or pass "
                "prompt_overflow='truncate'"
            )
        if self.num_filtered:
            warnings.warn(
                f"filtered out {self.num_filtered} of {len(rows)} prompts longer than max_prompt_tokens="
                f"{self.max_prompt_tokens} (as AlpacaFarm's QueryResponseDataset does)",
                stacklevel=2,
            )
        self._init_source([r for r, _ in kept], reward=reward, reward_kwargs=reward_kwargs, shuffle=shuffle, seed=seed,
                          split=split, data_dir=data_dir)
        P = self.max_prompt_tokens
        self._prompt_ids = np.full((len(kept), P), self.pad_token_id, dtype=np.int64)
        self._prompt_mask = np.zeros((len(kept), P), dtype=np.int64)
        for i, (_, x) in enumerate(kept):
            if x:
                self._prompt_ids[i, P - len(x) :] = x
                self._prompt_mask[i, P - len(x) :] = 1
        if self._prompt_ids.max() >= self.vocab_size:
            raise ValueError("tokenizer produced ids >= len(tokenizer)")

        V, T = self.vocab_size, self.max_new_tokens
        self.observation_space = spaces.Dict(
            {
                "prompt_ids": spaces.Box(0, V - 1, shape=(P,), dtype=np.int64),
                "prompt_mask": spaces.Box(0, 1, shape=(P,), dtype=np.int64),
                "response_ids": spaces.Box(0, V - 1, shape=(T,), dtype=np.int64),
                "response_mask": spaces.Box(0, 1, shape=(T,), dtype=np.int64),
            }
        )
        self.action_space = spaces.Discrete(V)
        self._current: int | None = None
        self._response: list[int] = []
        self._done = True
        self._last_text: str | None = None

    @property
    def current_row(self) -> dict[str, Any] | None:
        return None if self._current is None else self.rows[self._current]

    def _obs(self) -> dict[str, np.ndarray]:
        n = len(self._response)
        response_ids = np.full(self.max_new_tokens, self.pad_token_id, dtype=np.int64)
        response_mask = np.zeros(self.max_new_tokens, dtype=np.int64)
        response_ids[:n] = self._response
        response_mask[:n] = 1
        return {
            "prompt_ids": self._prompt_ids[self._current].copy(),
            "prompt_mask": self._prompt_mask[self._current].copy(),
            "response_ids": response_ids,
            "response_mask": response_mask,
        }

    def decode_response(self, token_ids: Sequence[int] | None = None) -> str:
        """The response text the reward backend sees: EOS dropped, special tokens skipped."""
        ids = [int(t) for t in (self._response if token_ids is None else token_ids) if int(t) not in self.eos_token_ids]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

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
        self._response, self._done, self._last_text = [], False, None
        row = self.rows[self._current]
        info = {
            "example_index": row["row_index"],
            "dataset": row["dataset"],
            "prompt_tokens": int(self._prompt_mask[self._current].sum()),
            "prompt_truncated": bool(row.get("prompt_truncated", False)),
        }
        return self._obs(), info

    def step(self, action: int):
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
            row = self.rows[self._current]
            text = self.decode_response()
            self._last_text = text
            scores, details = score_rows(self.reward_backend, [row], [text], self._episode_seeds(1))
            reward = scores[0]
            if truncated and self.truncated_reward is not None:
                reward = float(self.truncated_reward)  # e.g. AlpacaFarm-style penalty for responses without a stop
            info.update(copy.deepcopy(dict(details[0])))
            info.update(
                reference_output=row["reference_output"],
                response=text,
                response_length=len(text),
                response_tokens=len(self._response),
                finished_with_eos=terminated,
                example_index=row["row_index"],
                dataset=row["dataset"],
                reward_backend=str(getattr(self.reward_backend, "name", type(self.reward_backend).__name__)),
            )
        return self._obs(), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._current is None:
            return ""
        return self.rows[self._current]["prompt"] + " " + self.decode_response()
