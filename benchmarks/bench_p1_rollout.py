"""P1: rollout throughput. ``gym.make_vec("AlpacaFarm-v0")`` with a ``Policy`` sampling through it (reset, generate
the batch's responses with ``Policy.generate``, step) against raw ``model.generate`` on the same tokenized prompts,
same model, batch size, dtype, sampling settings and ``max_new_tokens``, seeded alike (so both sides generate the
same tokens: equal work). Figure: raw time / env time, the median of the rounds' paired ratios (>= 0.95 means the
env and the policy wrapper cost <= 5%).

The reward is ``length`` (cheap): this figure is the rollout machinery's; the judge's cost is P4's figure.
Sizes: the tiny preset's (batch 16, 96 new tokens); ``--quick``: batch 4, 16 tokens.

    python benchmarks/bench_p1_rollout.py [--quick]
"""
from __future__ import annotations

import gymnasium as gym

import statistics

from _bench import SEED, figure, interleaved, main, paired_ratio


def run(quick: bool) -> dict:
    import torch

    import alpaca_farm_env  # noqa: F401  (registers the envs)
    from alpaca_farm_env.models import load_policy
    from alpaca_farm_env.models.policy import _seeded
    from alpaca_farm_env.utils import stable_hash

    if quick:
        torch.set_num_threads(1)
    batch, new_tokens, reps = (4, 16, 3) if quick else (16, 96, 5)
    policy = load_policy("smollm2-135m", dtype="float32", device="cpu")
    env = gym.make_vec("AlpacaFarm-v0", num_envs=batch, split="unlabeled", reward="length", seed=SEED)
    obs, _ = env.reset(seed=SEED)
    prompts = list(obs["prompt"])
    kw = dict(max_new_tokens=new_tokens, temperature=0.7, top_p=1.0, do_sample=True)
    counts: dict[str, int] = {}

    def env_side():
        nonlocal obs
        responses = policy.generate(list(obs["prompt"]), batch_size=batch, seed=SEED, **kw)
        obs, rewards, *_ = env.step([r[0] for r in responses])
        return rewards

    def raw_side():  # the same prompts every time (the env moves on: equal lengths on average, not exactly)
        enc = policy.tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.no_grad(), _seeded(stable_hash("generate", SEED, 0)):
            out = policy.model.generate(**enc, max_new_tokens=new_tokens, do_sample=True, temperature=0.7, top_p=1.0,
                                        top_k=0, pad_token_id=policy.tokenizer.pad_token_id,
                                        eos_token_id=[2, 0])
        counts["raw_tokens"] = int(out.shape[1] - enc["input_ids"].shape[1])
        return out

    # equal work: the env side must run on the same prompts as raw; pin them by stepping a fixed-index env
    def env_side_same_prompts():
        nonlocal obs
        env.reset(options={"index": list(range(batch))})
        return env_side()

    env.reset(options={"index": list(range(batch))})
    prompts = list(env.reset(options={"index": list(range(batch))})[0]["prompt"])
    raw_side(), env_side_same_prompts()  # warm-up
    times = interleaved({"raw": raw_side, "env": env_side_same_prompts}, reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio, lo, hi = paired_ratio(times, "raw", "env")
    tok_s = batch * counts["raw_tokens"] / med["raw"]
    return {"item": "P1", "figures": [figure(
        "P1", "rollout throughput: vector env + Policy.generate vs raw model.generate", ratio, 0.95, ">=", "x",
        f"batch {batch}, {new_tokens} new tokens, float32, {torch.get_num_threads()} threads; raw {med['raw']:.2f} s "
        f"(~{tok_s:.0f} tok/s), env {med['env']:.2f} s (medians); median of {reps} paired rounds' ratios, range "
        f"{lo:.3f}-{hi:.3f}")], "raw": times}


if __name__ == "__main__":
    main(run, __doc__)
