"""Where P2's generation time goes (not part of ``make bench``: it profiles, it does not measure a figure).

1. ``torch.profiler`` over greedy ``model.generate`` (SmolLM2-135M, float32, batch 16, ``--tokens`` new tokens):
   the operators by self CPU time.
2. The decode step's matmuls alone, the lm_head alone, and the same matmuls at batch 1 and in bfloat16.
3. With ``--compile``: ``torch.compile`` of the forward with a static KV cache (``--mode``, default
   ``max-autotune-no-cudagraphs``; set ``TORCHINDUCTOR_FREEZING=1`` to let Inductor's C++ GEMM template compete
   with MKL), its compile time, tokens/s against eager, and whether greedy outputs are token-identical.

    python benchmarks/profile_p2_generate.py [--tokens 32] [--compile [--mode default]]
"""
from __future__ import annotations

import argparse
import time

from _bench import warm_median  # (importing _bench puts the repo on sys.path and sets the data dir)

INSTRUCTIONS = [
    "Name three primary colors.", "Explain why the sky is blue in one sentence.", "Write a haiku about autumn.",
    "What is the capital of France?", "Give two tips for staying healthy.", "Translate 'good morning' into Spanish.",
    "List three uses of a paperclip.", "Summarize the plot of Cinderella briefly.",
]


def median_ms(fn, reps: int = 10) -> float:
    return warm_median(fn, reps) * 1e3


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from alpaca_farm_env.data import format_prompt
    from alpaca_farm_env.models import load_policy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--mode", default="max-autotune-no-cudagraphs")
    args = ap.parse_args()

    policy = load_policy("smollm2-135m", dtype="float32", device="cpu")
    model, tok = policy.model, policy.tokenizer
    enc = tok([format_prompt(i) for i in (INSTRUCTIONS * 8)[: args.batch]], return_tensors="pt", padding=True)

    def gen(**extra):
        with torch.no_grad():
            return model.generate(**enc, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                                  pad_token_id=tok.pad_token_id, **extra)

    gen()
    t0 = time.perf_counter()
    base = gen()
    dt = time.perf_counter() - t0
    print(f"generate: {args.batch * args.tokens / dt:.1f} tok/s, {dt / args.tokens * 1e3:.1f} ms a step "
          f"(prompt {enc['input_ids'].shape[1]} tokens, prefill included)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        gen()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for batch, dtype in ((args.batch, torch.float32), (1, torch.float32), (args.batch, torch.bfloat16)):
        ws = [(m.weight.to(dtype), torch.randn(batch, m.in_features, dtype=dtype)) for m in linears]
        nbytes = sum(w.numel() * w.element_size() for w, _ in ws)
        flops = 2 * batch * sum(w.numel() for w, _ in ws)

        def step():
            with torch.no_grad():
                for w, x in ws:
                    torch.nn.functional.linear(x, w)

        ms = median_ms(step)
        print(f"decode-step matmuls alone, batch {batch}, {str(dtype).removeprefix('torch.')}: {ms:.1f} ms "
              f"({flops / ms / 1e6:.0f} GFLOP/s, {nbytes / ms / 1e6:.1f} GB/s of weights; {batch / ms * 1e3:.0f} tok/s)")
    head = model.get_output_embeddings().weight
    x = torch.randn(args.batch, head.shape[1])
    ms = median_ms(lambda: torch.nn.functional.linear(x, head))
    print(f"lm_head alone ({head.shape[0]} x {head.shape[1]}), batch {args.batch}: {ms:.1f} ms "
          f"({2 * head.numel() * args.batch / ms / 1e6:.0f} GFLOP/s)")

    if args.compile:
        static = gen(cache_implementation="static")
        eager_static = args.batch * args.tokens / median_ms(lambda: gen(cache_implementation="static"), 2) * 1e3
        model.forward = torch.compile(model.forward, mode=args.mode, dynamic=False)
        t0 = time.perf_counter()
        compiled = gen(cache_implementation="static")
        print(f"torch.compile ({args.mode}): first call {time.perf_counter() - t0:.0f} s")
        tok_s = args.batch * args.tokens / median_ms(lambda: gen(cache_implementation="static"), 2) * 1e3
        print(f"compiled, static cache: {tok_s:.1f} tok/s vs eager static cache {eager_static:.1f} tok/s; greedy "
              f"identical to eager: {bool(torch.equal(compiled, base) and torch.equal(static, base))}")


if __name__ == "__main__":
    main()
