"""SmolLM2-135M-Instruct's forward pass in plain torch, for the coherence gate's language-model evidence.

The gate scores every output the global head judges, in the env's step: importing transformers there would cost
about 2.5 s on the first judged step (docs/performance.md, P3b). This is the Llama forward of
``transformers/models/llama/modeling_llama.py`` (RMSNorm, rotary embeddings of the default type, grouped-query
attention, SwiGLU MLP, tied LM head) for right-padded batches, reading the converted folder's ``config.json``,
``model.safetensors`` and ``tokenizer.json``. ``tests/judge/test_judge_fuzz.py`` checks it against
``AutoModelForCausalLM`` on the same folder.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

_LAYER = "model.layers.{}."


class SmolLM:
    """``token_logprobs(ids)``: log P(token t | tokens < t) for each right-padded row (BOS first)."""

    def __init__(self, path: Path | str):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("model_type") != "llama" or cfg.get("hidden_act") != "silu":
            raise ValueError(f"{path}: SmolLM runs Llama models with SiLU, got model_type={cfg.get('model_type')!r}")
        rope = cfg.get("rope_parameters") or {"rope_theta": cfg.get("rope_theta", 10000.0), "rope_type": "default"}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"{path}: rotary embeddings of type {rope.get('rope_type')!r} are not supported")
        self.n_layers = int(cfg["num_hidden_layers"])
        self.heads = int(cfg["num_attention_heads"])
        self.kv_heads = int(cfg["num_key_value_heads"])
        self.head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // self.heads)
        self.eps = float(cfg["rms_norm_eps"])
        self.theta = float(rope["rope_theta"])
        self.bos_id = int(cfg["bos_token_id"])
        self.pad_id = int(cfg.get("pad_token_id") or cfg["eos_token_id"])
        self.w = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._lock = threading.Lock()
        inv = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        self._inv_freq = inv

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        with self._lock:
            return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids))

    def _rms(self, x, weight):
        import torch

        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    def token_logprobs(self, ids: np.ndarray):
        """``(n, L-1)`` float32 tensor: log-probability of ``ids[:, t]`` given ``ids[:, :t]``. Rows are right-padded:
        causal attention keeps padding (after the real tokens) from reaching them."""
        import torch
        import torch.nn.functional as F

        w = self.w
        x_ids = torch.as_tensor(ids, dtype=torch.long)
        n, length = x_ids.shape
        pos = torch.arange(length, dtype=torch.float32)
        freqs = torch.outer(pos, self._inv_freq)
        emb = torch.cat([freqs, freqs], -1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]

        def rotate(t):
            half = t.shape[-1] // 2
            return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

        rep = self.heads // self.kv_heads
        with torch.inference_mode():
            x = F.embedding(x_ids, w["model.embed_tokens.weight"])
            for i in range(self.n_layers):
                p = _LAYER.format(i)
                h = self._rms(x, w[p + "input_layernorm.weight"])
                q = F.linear(h, w[p + "self_attn.q_proj.weight"]).view(n, length, self.heads, self.head_dim).transpose(1, 2)
                k = F.linear(h, w[p + "self_attn.k_proj.weight"]).view(n, length, self.kv_heads, self.head_dim).transpose(1, 2)
                v = F.linear(h, w[p + "self_attn.v_proj.weight"]).view(n, length, self.kv_heads, self.head_dim).transpose(1, 2)
                q, k = rotate(q), rotate(k)
                # query head j reads key/value head j // rep, as transformers' repeat_kv
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=rep > 1)
                a = a.transpose(1, 2).reshape(n, length, -1)
                x = x + F.linear(a, w[p + "self_attn.o_proj.weight"])
                h = self._rms(x, w[p + "post_attention_layernorm.weight"])
                m = F.silu(F.linear(h, w[p + "mlp.gate_proj.weight"])) * F.linear(h, w[p + "mlp.up_proj.weight"])
                x = x + F.linear(m, w[p + "mlp.down_proj.weight"])
            x = self._rms(x, w["model.norm.weight"])
            logp = torch.log_softmax(F.linear(x[:, :-1], self.lm_head), -1)
            return logp.gather(2, x_ids[:, 1:, None])[..., 0]
