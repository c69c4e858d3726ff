"""Generation speed of the SmolLM2-135M policy: bfloat16 vs float32 on this machine, and batching.

Prints ratios against a float32 / batch-size-1 baseline measured in the same process (interleaved repeats, median),
so the figures are comparable across machines. Fixed-length generation (min_new_tokens = max_new_tokens) so both
dtypes do the same work even when greedy outputs differ.

    python benchmarks/bench_generation.py [--new-tokens 32] [--prompts 4] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from alpaca_farm_env.data import format_prompt
from alpaca_farm_env.models import load_policy

INSTRUCTIONS = [
    "Name three primary colors.",
    "Explain why the sky is blue in one sentence.",
    "Write a haiku about autumn.",
    "What is the capital of France?",
    "Give two tips for staying healthy.",
    "Translate 'good morning' into Spanish.",
    "List three uses of a paperclip.",
    "Summarize the plot of Cinderella briefly.",
]


@torch.no_grad()
def _run(policy, prompts, new_tokens: int, batch_size: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        enc = policy.tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        policy.model.generate(
            **enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            pad_token_id=policy.tokenizer.pad_token_id,
        )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    prompts = [format_prompt(i) for i in (INSTRUCTIONS * 4)[: args.prompts]]
    fp32 = load_policy("smollm2-135m", dtype="float32", device="cpu")
    bf16 = load_policy("smollm2-135m", dtype="bfloat16", device="cpu")
    cases = {
        "float32, batch 1": (fp32, 1),
        f"float32, batch {args.prompts}": (fp32, args.prompts),
        f"bfloat16, batch {args.prompts}": (bf16, args.prompts),
    }
    for pol, bs in cases.values():  # warm-up (first-call allocations, kernels)
        _run(pol, prompts[:1], 2, bs)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):  # interleaved, so load changes hit every case alike
        for name, (pol, bs) in cases.items():
            times[name].append(_run(pol, prompts, args.new_tokens, bs))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["float32, batch 1"]
    n_tok = args.prompts * args.new_tokens
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.prompts} prompts x {args.new_tokens} new tokens")
    for name, t in med.items():
        print(f"  {name:22s} {n_tok / t:8.1f} tok/s   speed-up vs float32 batch 1: {base / t:5.2f}x")
    ratio = med[f"float32, batch {args.prompts}"] / med[f"bfloat16, batch {args.prompts}"]
    print(f"bfloat16 / float32 speed ratio (same batch): {ratio:.2f}x  ({'faster' if ratio > 1 else 'slower'})")


if __name__ == "__main__":
    main()
