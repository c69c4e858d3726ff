"""P5: annotation concurrency. n requests at concurrency c against a local OpenAI-compatible server (127.0.0.1, real
HTTP, ``tests/openai_test_server.py``, in its own process so that it does not share the client's GIL) that answers each request after an added latency L must finish in
<= 1.2 x (n/c) x L. Figure: wall time / ((n/c) x L), median of the repeats, for c = 1, 8, 16.

    python benchmarks/bench_p5_annotation_concurrency.py [--quick]
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

from _bench import REPO, figure, main


def _rows(n: int, tag: str):
    ins = [f"Question {tag}-{i}?" for i in range(n)]
    o1 = [f"first answer [[s={(i * 7) % 11}]]" for i in range(n)]
    o2 = [f"second answer [[s={20 + i % 3}]]" for i in range(n)]
    return ins, [""] * n, o1, o2


SERVER = ("import sys, time; sys.path.insert(0, {tests!r}); from openai_test_server import ScriptedOpenAIServer as S; "
          "s = S(delay_s={latency}, lifetime_s=900, max_requests=100000).start(); print(s.url, flush=True); "
          "sys.stdin.read()")


def run(quick: bool) -> dict:
    from alpaca_farm_env.annotators.openai_backend import OpenAIPool

    latency = 0.2 if quick else 0.5
    reps = 2 if quick else 3
    proc = subprocess.Popen([sys.executable, "-c", SERVER.format(tests=str(REPO / "tests"), latency=latency)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    figures, raw = [], {}
    try:
        url = proc.stdout.readline().strip()
        for c in (1, 8, 16):
            n = 4 * c if quick else 8 * c  # n/c requests in a row per slot
            pool = OpenAIPool("alpaca_farm", members=["gpt4_4"], base_url=url, api_key="sk-bench", model="test-model",
                              cache_path=":memory:", max_concurrency=c, show_progress=False, backoff_base=0.01,
                              price_table={"test-model": (0.0, 0.0)})
            pool.compare(*_rows(c, f"warm{c}"))  # warm-up: imports, first connection
            ratios = []
            for r in range(reps):
                t0 = time.perf_counter()
                anns = pool.compare(*_rows(n, f"c{c}r{r}"))  # distinct pairs: no cache hits
                wall = time.perf_counter() - t0
                assert len(anns) == n and all(a.preference == 2.0 for a in anns), "server answers wrong"
                assert not any(a.from_cache for a in anns)
                ratios.append(wall / ((n / c) * latency))
            raw[f"c{c}"] = ratios
            figures.append(figure(f"P5c{c}", f"annotation wall time / ((n/c) x L), c = {c}", statistics.median(ratios),
                                  1.2, "<=", "x", f"n = {n}, L = {latency} s, median of {reps}"))
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()
    return {"item": "P5", "figures": figures, "raw": raw}


if __name__ == "__main__":
    main(run, __doc__)
