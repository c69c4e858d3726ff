"""``Policy``: a causal LM plus its tokenizer, with seeded batched generation and response log-probabilities."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

from ..utils import stable_hash


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU (and CUDA) generators inside the block without disturbing the caller's RNG state."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """All ids that end a response: the tokenizer's EOS plus the generation config's (chat models often have two,
    e.g. SmolLM2's ``<|im_end|>`` and ``<|endoftext|>``)."""
    ids: list[int] = []
    for src in (getattr(model, "generation_config", None), tokenizer):
        v = getattr(src, "eos_token_id", None) if src is not None else None
        for i in ([v] if isinstance(v, int) else list(v or [])):
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


class Policy:
    """A decoder-only LM (``model``) and its ``tokenizer``; ``name`` identifies it in results and caches.

    Prompts are plain text (the env formats them with the AlpacaFarm template); generation returns only the newly
    generated text, special tokens skipped.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str = "policy"):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        if tokenizer.pad_token is None:  # e.g. Llama-style tokenizers: pad with EOS (masked out anyway)
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # decoder-only batched generation needs left padding
        self.model.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"Policy(name={self.name!r}, params={n / 1e6:.1f}M, device={self.device}, dtype={self.model.dtype})"

    def _encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True)
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 300,
        temperature: float = 0.7,
        top_p: float = 1.0,
        do_sample: bool = True,
        num_return_sequences: int = 1,
        batch_size: int = 8,
        seed: int = 0,
        progress: bool = False,
    ) -> list[list[str]]:
        """``num_return_sequences`` responses per prompt: ``out[i][j]`` is the j-th response to ``prompts[i]``.

        Deterministic for a given ``seed``: each batch's sampling is seeded from ``(seed, batch start)``.
        ``temperature == 0`` or ``do_sample=False`` means greedy decoding (then batching does not change results,
        up to floating-point ties).
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not a single string")
        if max_new_tokens < 1 or num_return_sequences < 1 or batch_size < 1:
            raise ValueError("max_new_tokens, num_return_sequences and batch_size must be >= 1")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        greedy = (not do_sample) or temperature == 0
        if greedy and num_return_sequences > 1:
            raise ValueError("greedy decoding gives identical sequences; use do_sample=True for num_return_sequences > 1")
        eos = _eos_ids(self.model, self.tokenizer)
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_return_sequences,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos or None,
        )
        if greedy:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            # top_k=0: no top-k filter, only nucleus, as AlpacaFarm's HFDecodingArguments (inference/decode.py)
            gen_kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)

        from tqdm.auto import tqdm

        prompts = list(prompts)
        out: list[list[str]] = []
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc=f"generate ({self.name})", disable=not progress, unit="batch"):
            batch = prompts[start : start + batch_size]
            enc = self._encode(batch)
            with _seeded(stable_hash("generate", seed, start)):
                seqs = self.model.generate(**enc, **gen_kwargs)
            new = seqs[:, enc["input_ids"].shape[1] :]  # left padding: every prompt ends at the same column
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            # no strip (AlpacaFarm keeps the text as decoded); only NUL chars go, as its NullCharCleanUp does
            # (tatsu-lab/alpaca_farm src/alpaca_farm/inference/decode.py)
            texts = [t.replace("\x00", "") for t in texts]
            for i in range(len(batch)):
                out.append(texts[i * num_return_sequences : (i + 1) * num_return_sequences])
        return out

    @torch.no_grad()
    def logprobs(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 8) -> list[float]:
        """Sum over response tokens of log p(token | prompt, previous response tokens).

        Prompt and response are tokenized separately and concatenated (the response without special tokens), so the
        scored tokens are exactly the response's.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        tok = self.tokenizer
        pad = tok.pad_token_id
        result: list[float] = []
        for start in range(0, len(prompts), batch_size):
            ps, rs = prompts[start : start + batch_size], responses[start : start + batch_size]
            rows, n_prompt = [], []
            for p, r in zip(ps, rs):
                p_ids = tok(p).input_ids
                r_ids = tok(r, add_special_tokens=False).input_ids
                rows.append(p_ids + r_ids)
                n_prompt.append(len(p_ids))
            width = max(len(x) for x in rows)
            # right padding: a causal model's logits at real positions do not see the pads after them
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, x in enumerate(rows):
                ids[i, : len(x)] = torch.tensor(x)
                mask[i, : len(x)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(self.device).unsqueeze(-1))[..., 0]
            for i, x in enumerate(rows):
                result.append(float(logp[i, n_prompt[i] - 1 : len(x) - 1].sum()))
        return result
