"""P2: generation against this machine's limit, and the levers torch/transformers offer on CPU.

Roofline. A decode step at batch B reads every weight once (memory) and does 2 x params x B flops (compute); with the
machine's measured memory bandwidth (a large tensor's sum) and matmul throughput (a square ``torch.mm``), the best
decode rate is ``B / max(weight bytes / bandwidth, 2 x params x B / flops)`` tokens/s (KV-cache and activation
traffic, and the prompt's prefill, are left out: the bound is optimistic). Figures: raw ``model.generate`` tokens/s
(fixed length, greedy, float32, the tiny preset's batch 16 x 96 new tokens) over the roofline (target >= 0.5) and
over the issue's 38 tokens/s of ``make demo`` (target >= 2).

Levers, each against float32 / batch 16 / SDPA / dynamic cache / torch's default threads, interleaved, median, with
whether greedy outputs are token-identical to the baseline: bfloat16, static KV cache, eager attention, 1 thread,
batch 32 (cpu_all's). ``torch.compile`` is not run here: compiling the decode step takes 1-2 minutes on 2 cores,
longer than the generation it would speed up in ``make bench``. It was measured once by hand (docs/performance.md):
no faster, and Inductor's autotuner keeps MKL's GEMM over its own C++ template for every decode-step shape.

Where the time goes: the decode step's matmuls alone (every ``nn.Linear`` at the batch size, nothing else) are timed
too. They bound what any change outside the GEMM library can reach.

    python benchmarks/bench_p2_generation.py [--quick]
"""
from __future__ import annotations

import statistics
import time

from _bench import figure, main, warm_median

INSTRUCTIONS = [
    "Name three primary colors.", "Explain why the sky is blue in one sentence.", "Write a haiku about autumn.",
    "What is the capital of France?", "Give two tips for staying healthy.", "Translate 'good morning' into Spanish.",
    "List three uses of a paperclip.", "Summarize the plot of Cinderella briefly.",
]
DEMO_TOKENS_PER_S = 38.0  # issue 12: make demo, batch 12, float32, 2 cores


def machine_limits(quick: bool) -> dict:
    import torch

    n = (64 if quick else 256) * 2**20 // 4
    x = torch.ones(n, dtype=torch.float32)
    x.sum()
    bw = []
    for _ in range(5):
        t0 = time.perf_counter()
        x.sum()
        bw.append(n * 4 / (time.perf_counter() - t0))
    flops = {}
    for dt in (torch.float32, torch.bfloat16):
        m = 1024 if quick else 2048
        a, b = torch.randn(m, m).to(dt), torch.randn(m, m).to(dt)
        torch.mm(a, b)
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            torch.mm(a, b)
            ts.append(time.perf_counter() - t0)
        flops[str(dt).removeprefix("torch.")] = 2 * m**3 / statistics.median(ts)
    return {"bandwidth": statistics.median(bw), "flops": flops}


def linear_ceiling(model, batch: int, reps: int) -> float:
    """Seconds of one decode step's matmuls alone: every ``nn.Linear`` of the model (the 30 layers' projections and
    the lm_head) applied to a ``(batch, in_features)`` input, back to back, median of ``reps``. It is the most
    ``generate`` could reach with torch's own GEMM (MKL here) at this batch, with attention, the KV cache, norms and
    the decoding loop taking no time at all."""
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = {m.in_features: torch.randn(batch, m.in_features) for m in linears}

    def step():
        with torch.no_grad():
            for m in linears:
                torch.nn.functional.linear(xs[m.in_features], m.weight, m.bias)

    return warm_median(step, reps)


def roofline(params: int, bytes_per_param: int, batch: int, bandwidth: float, flops: float) -> float:
    step = max(params * bytes_per_param / bandwidth, 2 * params * batch / flops)
    return batch / step


def run(quick: bool) -> dict:
    import torch

    from alpaca_farm_env.data import format_prompt
    from alpaca_farm_env.models import load_policy

    default_threads = torch.get_num_threads()
    if quick:
        torch.set_num_threads(1)
        default_threads = 1
    batch, new_tokens, reps = (4, 8, 2) if quick else (16, 96, 2)
    prompts = [format_prompt(i) for i in (INSTRUCTIONS * 8)]
    lim = machine_limits(quick)
    fp32 = load_policy("smollm2-135m", dtype="float32", device="cpu")
    bf16 = load_policy("smollm2-135m", dtype="bfloat16", device="cpu")
    # weights a decode step reads: every parameter but the input embedding (tied: read once, as the lm_head)
    params = sum(p.numel() for p in fp32.model.parameters())

    def gen(policy, bs, threads=None, **extra):
        def go():
            if threads:
                torch.set_num_threads(threads)
            try:
                enc = policy.tokenizer(prompts[:bs], return_tensors="pt", padding=True)
                with torch.no_grad():
                    out = policy.model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                do_sample=False, pad_token_id=policy.tokenizer.pad_token_id, **extra)
                return out[:, enc["input_ids"].shape[1]:]
            finally:
                torch.set_num_threads(default_threads)
        return go

    eager = load_policy("smollm2-135m", dtype="float32", device="cpu")
    eager.model.set_attn_implementation("eager")
    cases = {
        "float32 (baseline)": gen(fp32, batch),
        "bfloat16": gen(bf16, batch),
        "static KV cache": gen(fp32, batch, cache_implementation="static"),
        "eager attention": gen(eager, batch),
        "1 thread": gen(fp32, batch, threads=1),
        f"batch {2 * batch}": gen(fp32, 2 * batch),
    }
    outs, times = {}, {k: [] for k in cases}
    for k, fn in cases.items():  # warm-up, and the greedy outputs
        outs[k] = fn()
    for _ in range(reps):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    tok_s = {k: (2 * batch if k.startswith("batch") else batch) * new_tokens / statistics.median(v)
             for k, v in times.items()}
    base = tok_s["float32 (baseline)"]
    levers = {}
    for k in cases:
        same = bool(torch.equal(outs[k][:batch], outs["float32 (baseline)"]))
        levers[k] = {"tokens_per_s": round(tok_s[k], 1), "speedup": round(tok_s[k] / base, 2), "greedy_identical": same}
    roof = roofline(params, 4, batch, lim["bandwidth"], lim["flops"]["float32"])
    gemm_s = linear_ceiling(fp32.model, batch, 3 if quick else 10)
    gemm_tok_s = batch / gemm_s
    linear_params = sum(m.weight.numel() for m in fp32.model.modules() if isinstance(m, torch.nn.Linear))
    gemm_flops = 2 * linear_params * batch / gemm_s
    roof_bf16 = roofline(params, 2, batch, lim["bandwidth"], lim["flops"]["bfloat16"])
    detail = (f"{base:.0f} tok/s raw generate (batch {batch}, {new_tokens} tokens, float32, {default_threads} threads); "
              f"roofline {roof:.0f} tok/s from {lim['bandwidth'] / 1e9:.1f} GB/s and "
              f"{lim['flops']['float32'] / 1e9:.0f} GFLOP/s ({params / 1e6:.0f}M params); the decode step's matmuls "
              f"alone: {gemm_s * 1e3:.0f} ms at batch {batch} ({gemm_flops / 1e9:.0f} GFLOP/s), a ceiling of "
              f"{gemm_tok_s:.0f} tok/s = {gemm_tok_s / roof:.2f}x the roofline; generate spends "
              f"{batch / base * 1e3:.0f} ms a decode step (prefill included)")
    lever_txt = "; ".join(f"{k}: {v['speedup']}x{'' if v['greedy_identical'] else ' (greedy differs)'}"
                          for k, v in levers.items() if k != "float32 (baseline)")
    return {"item": "P2", "figures": [
        figure("P2a", "raw generate vs roofline (tiny preset, float32)", base / roof, 0.5, ">=", "x", detail),
        figure("P2b", "raw generate vs make demo's 38 tok/s", base / DEMO_TOKENS_PER_S, 2.0, ">=", "x",
               f"{base:.0f} tok/s; levers vs baseline: {lever_txt}; bfloat16 roofline {roof_bf16:.0f} tok/s"),
    ], "levers": levers, "limits": lim, "params": params,
            "gemm_ceiling": {"seconds_per_step": gemm_s, "tokens_per_s": gemm_tok_s, "gflops": gemm_flops / 1e9}}


if __name__ == "__main__":
    main(run, __doc__)
