"""P3: ``import alpaca_farm_env`` against a bare ``import gymnasium``, and the first ``step()`` of
``gym.make("AlpacaFarm-v0")`` (training split, default reward) against a warm second step.

Each side is timed in a fresh Python process (the import cost is what a new process pays), several repeats, the
median. The first step counts ``gym.make`` + ``reset`` + ``step`` after the import; its response carries a fresh
tag so that its embedding is not in the judge's on-disk cache, and it counts until the judge has scored a
response (the noisy pool answers 25% of steps with a coin flip, without the judge) (warm caches otherwise: converted models, judge
artifacts). Targets: import < 1 s, first step < 3 s.

    python benchmarks/bench_p3_first_step.py [--quick]
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

from _bench import REPO, figure, main

IMPORT = "import time; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t)"
STEP = r"""
import json, sys, time, uuid
import gymnasium as gym
import alpaca_farm_env  # noqa
t0 = time.perf_counter()
env = gym.make("AlpacaFarm-v0", split="unlabeled", seed=0)
env.reset(seed=0)
t1 = time.perf_counter()
def judged_step():
    # the noisy pool replaces 25% of labels by a coin flip without asking the judge: step until the judge answered
    for k in range(20):
        _, _, _, _, info = env.step("Here is a short answer to the instruction. " + uuid.uuid4().hex)
        if not info.get("is_noisy_label"):
            return k + 1
        env.reset()
    raise RuntimeError("no judged step in 20 episodes")
n1 = judged_step()
t2 = time.perf_counter()
env.reset()
n2 = judged_step()
t3 = time.perf_counter()
from alpaca_farm_env.judge import bank_heads
built = any(getattr(b, "built", True) for b in bank_heads._BANKS.values())
print(json.dumps({"make_reset": t1 - t0, "first": t2 - t1, "second": t3 - t2, "bank_built": built,
                  "episodes": [n1, n2], "torch_loaded": "torch" in sys.modules}))
"""


def _py(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO).stdout


def run(quick: bool) -> dict:
    reps = 3 if quick else 5
    imp = {"gymnasium": [], "alpaca_farm_env": []}
    for _ in range(reps):  # interleaved
        for mod in imp:
            imp[mod].append(float(_py(IMPORT.format(mod=mod)).strip().splitlines()[-1]))
    med = {k: statistics.median(v) for k, v in imp.items()}
    steps = [json.loads(_py(STEP).strip().splitlines()[-1]) for _ in range(2 if quick else 3)]
    first = statistics.median(s["make_reset"] + s["first"] for s in steps)
    second = statistics.median(s["second"] for s in steps)
    mk = statistics.median(s["make_reset"] for s in steps)
    return {"item": "P3", "figures": [
        figure("P3a", "import alpaca_farm_env (s)", med["alpaca_farm_env"], 1.0, "<", " s",
               f"bare import gymnasium {med['gymnasium']:.2f} s: ratio {med['alpaca_farm_env'] / med['gymnasium']:.2f}x; "
               f"median of {reps} fresh processes"),
        figure("P3b", "first step of AlpacaFarm-v0, unlabeled split, default reward (s)", first, 3.0, "<", " s",
               f"make+reset {mk:.2f} s + step {first - mk:.2f} s; warm second reset+step {second:.3f} s: "
               f"ratio {first / max(second, 1e-9):.0f}x; answer bank built: {any(s['bank_built'] for s in steps)}; "
               f"median of {len(steps)} fresh processes"),
    ], "raw": {"imports": imp, "steps": steps}}


if __name__ == "__main__":
    main(run, __doc__)
