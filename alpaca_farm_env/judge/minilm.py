"""The judge's sentence encoder, all-MiniLM-L6-v2, as a NumPy forward pass (no torch, no transformers).

Why not ``transformers.AutoModel``: the judge scores the first env step of every new process, and importing torch
plus transformers' BERT module costs ~3 s on 2 CPU cores (issue 12, P3), far more than the encoding itself (a few
texts of at most 128 word pieces). The model is small (6 layers x 384, 22M parameters), so the forward pass is a
few dozen NumPy matmuls; the weights are read from the package's ``model.safetensors`` and the word pieces come from
its ``tokenizer.json`` through the ``tokenizers`` library, the same files ``AutoTokenizer`` / ``AutoModel`` read.

The computation is ``BertModel``'s (post-LayerNorm encoder, exact-erf GELU, LayerNorm eps from ``config.json``,
padded keys masked out), followed by the package's pooling (``1_Pooling/config.json``: mean over real tokens) and L2
normalisation. ``tests/test_performance_behaviour.py::test_numpy_minilm_matches_transformers`` holds it to ``AutoModel``'s
embeddings (float32, max abs difference < 1e-5).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

_LAYER = "encoder.layer.{}."


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True)
    return xc / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # BERT's "gelu" is the exact erf form, not the tanh approximation

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0, dtype=x.dtype)))


class NumpyMiniLM:
    """Mean-pooled, L2-normalised sentence embeddings of a BERT encoder folder (``config.json``,
    ``model.safetensors``, ``tokenizer.json``). ``embed(texts, max_tokens) -> (n, hidden) float32``."""

    def __init__(self, path: Path | str):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
            raise ValueError(f"{path}: NumpyMiniLM runs BERT encoders with exact GELU, got "
                             f"model_type={cfg.get('model_type')!r}, hidden_act={cfg.get('hidden_act')!r}")
        self.eps = float(cfg["layer_norm_eps"])
        self.heads = int(cfg["num_attention_heads"])
        self.n_layers = int(cfg["num_hidden_layers"])
        self.max_positions = int(cfg["max_position_embeddings"])
        w = load_file(str(path / "model.safetensors"))
        w = {k.removeprefix("bert."): v for k, v in w.items()}
        self.w = {k: (np.ascontiguousarray(v.T) if k.endswith("dense.weight") or k.endswith(
            ("query.weight", "key.weight", "value.weight")) else v) for k, v in w.items()}  # (in, out) for x @ W
        self.pad_id = int(cfg.get("pad_token_id") or 0)
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._lock = threading.Lock()  # the Rust tokenizer's truncation setting is shared state

    def tokenize(self, texts: Sequence[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """Word-piece ids ``(n, L)`` with [CLS] ... [SEP], truncated to ``max_tokens``, right-padded; and the mask."""
        with self._lock:
            self._tokenizer.enable_truncation(max_length=min(max_tokens, self.max_positions))
            encs = self._tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), length), dtype=np.float32)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1.0
        return ids, mask

    def hidden_states(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``BertModel(...).last_hidden_state`` (token type 0 everywhere), ``(n, L, hidden)`` float32."""
        w, eps = self.w, self.eps
        n, length = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        d = x.shape[-1] // self.heads
        # padded keys get the most negative float, as transformers' attention mask does
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :].astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(d))

        def split(t: np.ndarray) -> np.ndarray:  # (n, L, H) -> (n, heads, L, d)
            return t.reshape(n, length, self.heads, d).transpose(0, 2, 1, 3)

        for i in range(self.n_layers):
            p = _LAYER.format(i)
            q = split(x @ w[p + "attention.self.query.weight"] + w[p + "attention.self.query.bias"])
            k = split(x @ w[p + "attention.self.key.weight"] + w[p + "attention.self.key.bias"])
            v = split(x @ w[p + "attention.self.value.weight"] + w[p + "attention.self.value.bias"])
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            probs = scores / scores.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, -1)
            a = ctx @ w[p + "attention.output.dense.weight"] + w[p + "attention.output.dense.bias"]
            x = _layer_norm(a + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                            eps)
            h = _gelu(x @ w[p + "intermediate.dense.weight"] + w[p + "intermediate.dense.bias"])
            h = h @ w[p + "output.dense.weight"] + w[p + "output.dense.bias"]
            x = _layer_norm(h + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        return x.astype(np.float32, copy=False)

    def embed(self, texts: Sequence[str], max_tokens: int) -> np.ndarray:
        """Mean pooling over real tokens, then L2 normalisation (the package's sentence-transformers head)."""
        ids, mask = self.tokenize(texts, max_tokens)
        hidden = self.hidden_states(ids, mask)
        pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norm = np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return (pooled / norm).astype(np.float32)
