"""The answer bank: GPT-4-labelled answers to the same instruction, as evidence for the distilled judge.

On the 805 evaluation instructions the data dir holds, for each instruction, the answers of every GPT-4-annotated
model together with GPT-4's verdict against the text-davinci-003 reference. A new answer that reads like the answers
GPT-4 preferred (and unlike the ones it rejected) is likely to be preferred too; this is what a frozen sentence
encoder cannot see (is the answer *right*, does it follow the instruction) and what makes the difference on weak,
verbose models. The judge turns the bank into ``BANK_FEATURES`` for an (instruction, output) pair:

* TF-IDF similarities (word 1-2-grams, hashed, sublinear tf) between the output and each banked answer;
* GPT-4's label of the nearest banked answers (soft-max weighted at two temperatures, top-3), the similarity margin
  between the nearest preferred and nearest rejected answer, the mean similarity (consensus) and the similarity to
  the reference itself;
* how often the banked answers beat the reference on this instruction (difficulty), and the output's log length
  relative to the preferred, rejected and all banked answers.

Each feature depends on one (instruction, output) pair and the bank only, so the judge stays a per-output score and
``P(o2 beats o1) = sigmoid(s2 - s1)`` stays exactly order-symmetric. The reference answer is itself a bank entry,
labelled 1/2 (it draws with itself). Evaluating honestly needs care: when a model's pairs are scored in
leave-one-model-out, that model's answers are removed from the bank (``exclude``), for both outputs of a pair, in
training as at test time -- otherwise the feature would read the label it predicts.
"""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from ..utils import digest
from .features import full_prompt

REFERENCE = "__reference__"
BANK_FEATURES = (
    "knn_label_t0.05", "knn_label_t0.2", "winner_minus_loser_sim", "top3_label", "mean_sim", "reference_sim",
    "bank_win_rate", "log_words_vs_winners", "log_words_vs_losers", "log_words_vs_bank",
    # support of the output's parts: each chunk (sentences of >= 6 words) is compared with the banked answers; a
    # chunk that no other answer says anything like is filler, off-topic or made up
    "chunk_support_mean", "chunk_support_min", "unsupported_share",
)
CHUNK_WORDS = 6
MAX_CHUNKS = 40
UNSUPPORTED_SIM = 0.08
N_BANK_FEATURES = len(BANK_FEATURES)
_WORD_RE = re.compile(r"\w+", re.U)


def _log_words(text: str) -> float:
    return math.log1p(len(text.split()))


_CHUNK_SPLIT_RE = re.compile(r"(?<=[.!?;])\s+|\n+")


def chunks(text: str) -> list[str]:
    """The output cut into sentences (and lines), consecutive short ones merged to at least ``CHUNK_WORDS`` words;
    at most ``MAX_CHUNKS`` (the rest joins the last)."""
    out: list[str] = []
    cur: list[str] = []
    for piece in _CHUNK_SPLIT_RE.split((text or "").strip()):
        cur.extend(piece.split())
        if len(cur) >= CHUNK_WORDS:
            out.append(" ".join(cur))
            cur = []
    if cur:
        if out and len(cur) < CHUNK_WORDS:
            out[-1] += " " + " ".join(cur)
        else:
            out.append(" ".join(cur))
    if len(out) > MAX_CHUNKS:
        out = out[: MAX_CHUNKS - 1] + [" ".join(out[MAX_CHUNKS - 1 :])]
    return out


class HashedTfidf:
    """TF-IDF over lower-cased word unigrams and bigrams, hashed into ``2**bits`` buckets (crc32: stable across
    processes, and no 1M-entry vocabulary in memory). ``fit`` learns the idf; buckets unseen in the fit get the
    largest idf, so a new text's own words still count in its norm."""

    def __init__(self, bits: int = 20):
        self.n = 1 << bits
        self.idf: np.ndarray | None = None

    def _counts(self, texts: Iterable[str]) -> sp.csr_matrix:
        indptr, indices, data = [0], [], []
        mask = self.n - 1
        for t in texts:
            words = _WORD_RE.findall((t or "").lower())
            counts: dict[int, int] = {}
            for tok in words + [a + " " + b for a, b in zip(words, words[1:])]:
                b = zlib.crc32(tok.encode("utf-8")) & mask
                counts[b] = counts.get(b, 0) + 1
            indices.extend(counts)
            data.extend(1.0 + math.log(c) for c in counts.values())
            indptr.append(len(indices))
        return sp.csr_matrix((np.asarray(data, np.float32), np.asarray(indices, np.int32), np.asarray(indptr, np.int64)),
                             shape=(len(indptr) - 1, self.n))

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        X = self._counts(texts)
        df = np.bincount(X.indices, minlength=self.n)
        self.idf = (np.log((1.0 + X.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)
        return self._weight(X)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        if self.idf is None:
            raise RuntimeError("HashedTfidf.transform before fit_transform")
        return self._weight(self._counts(texts))

    def _weight(self, X: sp.csr_matrix) -> sp.csr_matrix:
        X = X.multiply(self.idf[None, :]).tocsr().astype(np.float32)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(1)).ravel())
        return (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ X).tocsr()


@dataclass
class BankQuery:
    """One output's similarities to the banked answers of its instruction (independent of any exclusion)."""

    entries: np.ndarray  # indices into the bank's entry arrays (the reference included)
    sims: np.ndarray
    log_words: float
    reference_sim: float
    chunk_sims: np.ndarray | None = None  # (entries, chunks): each chunk's similarity to each banked answer
    chunk_words: np.ndarray | None = None  # words per chunk (the weights of the chunk features)


class AnswerBank:
    """GPT-4-labelled answers per instruction, built from judge training rows (``output_1`` = the reference,
    ``output_2`` = a model's answer, ``preference`` GPT-4's label, ``model``)."""

    def __init__(self, rows: Sequence[dict], tfidf_bits: int = 20):
        texts: list[str] = []
        models: list[str] = []
        labels: list[float] = []
        self.by_prompt: dict[str, list[int]] = {}
        self.reference_of: dict[str, int] = {}
        seen_ref: dict[tuple[str, str], int] = {}
        for r in rows:
            if r.get("synthetic"):
                continue
            key = full_prompt(r["instruction"], r.get("input", "") or "")
            ids = self.by_prompt.setdefault(key, [])
            if (key, r["output_1"]) not in seen_ref:  # the reference draws with itself: label 1/2
                seen_ref[(key, r["output_1"])] = len(texts)
                self.reference_of.setdefault(key, len(texts))
                ids.append(len(texts))
                texts.append(r["output_1"]); models.append(REFERENCE); labels.append(0.5)
            ids.append(len(texts))
            texts.append(r["output_2"]); models.append(r["model"]); labels.append(float(r["preference"]) - 1.0)
        if not texts:
            raise ValueError("an answer bank needs at least one labelled pair")
        self.texts = np.asarray(texts, dtype=object)
        self.models = np.asarray(models, dtype=object)
        self.labels = np.asarray(labels, dtype=np.float64)
        self.log_words = np.asarray([_log_words(t) for t in texts])
        self.tfidf = HashedTfidf(tfidf_bits)
        self.matrix = self.tfidf.fit_transform(texts)
        self.by_prompt_arr = {k: np.asarray(v, dtype=np.int64) for k, v in self.by_prompt.items()}
        self.rows = list(rows)  # what it was built from: the bank heads train on exactly these pairs
        self.key = digest(sorted((k, len(v)) for k, v in self.by_prompt.items()) + [digest(texts), digest(labels)])[:16]
        self.n_entries = len(texts)

    def __len__(self) -> int:
        return len(self.by_prompt)

    def has(self, instruction: str, inp: str = "") -> bool:
        return full_prompt(instruction, inp or "") in self.by_prompt_arr

    def query(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[BankQuery | None]:
        """Similarities of each output to its instruction's banked answers; ``None`` where the bank has none."""
        keys = [full_prompt(i, x or "") for i, x in zip(instructions, inputs)]
        out: list[BankQuery | None] = [None] * len(keys)
        todo = [k for k, key in enumerate(keys) if key in self.by_prompt_arr]
        if not todo:
            return out
        Q = self.tfidf.transform([outputs[k] for k in todo])
        pieces = [chunks(outputs[k]) for k in todo]
        C = self.tfidf.transform([c for p in pieces for c in p])
        starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])
        groups: dict[str, list[int]] = {}
        for row, k in enumerate(todo):
            groups.setdefault(keys[k], []).append(row)
        for key, qrows in groups.items():
            entries = self.by_prompt_arr[key]
            M = self.matrix[entries]
            S = (M @ Q[qrows].T).toarray()  # (entries, queries)
            crow = np.concatenate([np.arange(starts[r], starts[r + 1]) for r in qrows]).astype(np.int64)
            CS = (M @ C[crow].T).toarray() if len(crow) else np.zeros((len(entries), 0))
            ref_pos = int(np.flatnonzero(entries == self.reference_of[key])[0])
            at = 0
            for j, row in enumerate(qrows):
                k = todo[row]
                nc = len(pieces[row])
                out[k] = BankQuery(entries, S[:, j].astype(np.float64), _log_words(outputs[k]), float(S[ref_pos, j]),
                                   CS[:, at : at + nc].astype(np.float64),
                                   np.asarray([len(c.split()) for c in pieces[row]], np.float64))
                at += nc
        return out

    def features(
        self,
        queries: Sequence[BankQuery | None],
        exclude: Sequence[Iterable[str]] | None = None,
        exclude_texts: Sequence[Iterable[str]] | None = None,
    ) -> np.ndarray:
        """``(n, N_BANK_FEATURES)``; ``exclude[i]`` = models whose answers query ``i`` must not see, and
        ``exclude_texts[i]`` = answer texts it must not see (a pair's own outputs, so that their GPT-4 label is not
        read back); the reference entry is never excluded. Rows without a bank are zeros (the judge uses its global
        head for them)."""
        F = np.zeros((len(queries), N_BANK_FEATURES), np.float32)
        for i, q in enumerate(queries):
            if q is None:
                continue
            keep = np.ones(len(q.entries), bool)
            ex = set(exclude[i]) if exclude is not None and exclude[i] else None
            if ex:
                keep = np.asarray([m not in ex for m in self.models[q.entries]])
            ext = set(exclude_texts[i]) if exclude_texts is not None and exclude_texts[i] else None
            if ext:
                keep &= np.asarray([m == REFERENCE or t not in ext
                                    for m, t in zip(self.models[q.entries], self.texts[q.entries])])
            s, y, lw = q.sims[keep], self.labels[q.entries[keep]], self.log_words[q.entries[keep]]
            if len(s) == 0:
                continue
            feats = []
            for tau in (0.05, 0.2):
                w = np.exp((s - s.max()) / tau)
                feats.append(float((w * y).sum() / w.sum()) - 0.5)
            win, lose = y > 0.5, y < 0.5
            feats.append((s[win].max() if win.any() else 0.0) - (s[lose].max() if lose.any() else 0.0))
            feats.append(float(y[np.argsort(-s, kind="stable")[:3]].mean()) - 0.5)
            feats.append(float(s.mean()))
            feats.append(q.reference_sim)
            feats.append(float(y.mean()) - 0.5)
            feats.append(q.log_words - (lw[win].mean() if win.any() else q.log_words))
            feats.append(q.log_words - (lw[lose].mean() if lose.any() else q.log_words))
            feats.append(q.log_words - lw.mean())
            if q.chunk_sims is not None and q.chunk_sims.shape[1]:
                # each chunk's best match among the other answers (the reference's own entry excluded: a chunk of
                # the reference itself would find itself there)
                other = keep & (self.models[q.entries] != REFERENCE) if (self.models[q.entries] != REFERENCE)[keep].any() else keep
                best = q.chunk_sims[other].max(0)
                wts = q.chunk_words / q.chunk_words.sum()
                feats += [float(wts @ best), float(best.min()), float(wts @ (best < UNSUPPORTED_SIM))]
            else:
                feats += [0.0, 0.0, 1.0 if q.log_words > 0 else 0.0]
            F[i] = feats
        return F


# ----------------------------------------------------------------------------------------------- the bank head
@dataclass
class BankHeads:
    """Score heads over ``[hand features | bank features]``: ``s = wlin.x + W2.gelu(W1 x + b1)`` on standardised x.
    The hidden layer lets the judge learn interactions a linear head cannot (a long answer that reads unlike any
    preferred answer is worse, not better). Head 0: all pairs; heads 1..: bootstrap members."""

    mu: np.ndarray
    scale: np.ndarray
    W1: np.ndarray  # (H, hidden, d)
    b1: np.ndarray  # (H, hidden)
    W2: np.ndarray  # (H, hidden)
    wlin: np.ndarray  # (H, d)

    def scores(self, X: np.ndarray, head: int) -> np.ndarray:
        from scipy.special import erf

        Z = (np.asarray(X, np.float64) - self.mu) / self.scale
        h = Z @ self.W1[head].T.astype(np.float64) + self.b1[head]
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # exact GELU, as torch.nn.GELU()
        return h @ self.W2[head].astype(np.float64) + Z @ self.wlin[head].astype(np.float64)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"bank_{k}": getattr(self, k).astype(np.float32) for k in ("mu", "scale", "W1", "b1", "W2", "wlin")}

    @classmethod
    def from_arrays(cls, z) -> "BankHeads":
        return cls(**{k: np.asarray(z[f"bank_{k}"]) for k in ("mu", "scale", "W1", "b1", "W2", "wlin")})


def fit_bank_head(
    X1: np.ndarray, X2: np.ndarray, y: np.ndarray, weight: np.ndarray, mu: np.ndarray, scale: np.ndarray, *,
    hidden: int = 32, epochs: int = 40, lr: float = 3e-3, weight_decay: float = 1e-3, batch_size: int = 512, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bradley-Terry fit of one MLP head: minimise weighted BCE(sigmoid(s(x2) - s(x1)), y) with AdamW, seeded."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    A = torch.as_tensor((X1 - mu) / scale, dtype=torch.float32)
    B = torch.as_tensor((X2 - mu) / scale, dtype=torch.float32)
    Y = torch.as_tensor(y, dtype=torch.float32)
    Wt = torch.as_tensor(weight, dtype=torch.float32)
    d = A.shape[1]
    lin1 = torch.nn.Linear(d, hidden)
    lin2 = torch.nn.Linear(hidden, 1, bias=False)  # a bias cancels in s2 - s1
    skip = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():  # seeded init, independent of torch's global RNG
        for p in (lin1.weight, lin1.bias, lin2.weight, skip.weight):
            bound = 1.0 / math.sqrt(p.shape[-1] if p.dim() > 1 else d)
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
    params = list(lin1.parameters()) + list(lin2.parameters()) + list(skip.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    act = torch.nn.GELU()

    def score(X):
        return lin2(act(lin1(X))).squeeze(-1) + skip(X).squeeze(-1)

    n = len(Y)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for k in range(0, n, batch_size):
            b = perm[k : k + batch_size]
            wb = Wt[b]
            if float(wb.sum()) <= 0:
                continue
            loss = torch.nn.functional.binary_cross_entropy_with_logits(score(B[b]) - score(A[b]), Y[b], reduction="none")
            loss = (loss * wb).sum() / wb.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (lin1.weight.detach().numpy().copy(), lin1.bias.detach().numpy().copy(),
            lin2.weight.detach().numpy()[0].copy(), skip.weight.detach().numpy()[0].copy())
