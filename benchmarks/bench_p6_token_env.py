"""P6: per-step overhead of ``AlpacaFarmToken-v0`` against one policy forward per token (same model, SmolLM2-135M,
batch 1, one decode step with the KV cache). Figure: env step time / forward time (target < 5%). Non-final steps
only (the final one calls the reward, whose cost is P4's); the reward here is ``length``.

    python benchmarks/bench_p6_token_env.py [--quick]
"""
from __future__ import annotations

import statistics
import time

import gymnasium as gym

from _bench import SEED, figure, main


def run(quick: bool) -> dict:
    import torch

    import alpaca_farm_env  # noqa: F401
    from alpaca_farm_env.models import load_policy

    if quick:
        torch.set_num_threads(1)
    n_tokens, reps = (16, 3) if quick else (64, 5)
    policy = load_policy("smollm2-135m", dtype="float32", device="cpu")
    env = gym.make("AlpacaFarmToken-v0", split="unlabeled", reward="length", tokenizer=policy, seed=SEED,
                   max_new_tokens=n_tokens + 1)
    obs, _ = env.reset(seed=SEED)
    ids = torch.as_tensor(obs["prompt_ids"][obs["prompt_mask"] == 1])[None]
    with torch.no_grad():
        out = policy.model(input_ids=ids, use_cache=True)
    past, tok = out.past_key_values, int(out.logits[0, -1].argmax())
    tokens = []
    fwd, step = [], []
    for _ in range(reps):
        env.reset(seed=SEED)
        with torch.no_grad():
            out = policy.model(input_ids=ids, use_cache=True)
        past, tok = out.past_key_values, int(out.logits[0, -1].argmax())
        t_f = t_s = 0.0
        for _ in range(n_tokens):
            if tok in (0, 2):
                tok = 100  # keep the episode running: non-final steps only
            t0 = time.perf_counter()
            env.step(tok)
            t1 = time.perf_counter()
            with torch.no_grad():
                out = policy.model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            t2 = time.perf_counter()
            past, tok = out.past_key_values, int(out.logits[0, -1].argmax())
            tokens.append(tok)
            t_s += t1 - t0
            t_f += t2 - t1
        step.append(t_s / n_tokens)
        fwd.append(t_f / n_tokens)
    s, f = statistics.median(step), statistics.median(fwd)
    return {"item": "P6", "figures": [figure(
        "P6", "token env step / one policy forward per token", s / f, 0.05, "<", "x",
        f"step {s * 1e3:.2f} ms, forward {f * 1e3:.1f} ms (batch 1, KV cache, float32, {torch.get_num_threads()} "
        f"threads); {n_tokens} tokens x {reps}, median")], "raw": {"step_s": step, "forward_s": fwd}}


if __name__ == "__main__":
    main(run, __doc__)
