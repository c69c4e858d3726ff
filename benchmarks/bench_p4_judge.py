"""P4: the judge. ``alpaca-farm evaluate`` (the ``evaluate`` function, default ``pooled`` judge) scoring the 805
eval pairs of a model whose outputs are in the data dir but not among the judge's GPT-4-annotated models (so its
answers are not in the answer bank), then the same evaluation again from its annotation cache, which must make zero
judge calls (counted on ``DistilledJudge.compare``). Figures: judge calls of the cached re-evaluation (target 0),
and cached time / first time (no target; the first evaluation's pairs/s in the detail). Warm machine caches: the
judge's artifacts exist, and texts already embedded on this machine are not re-encoded (the detail says how many
were).

    python benchmarks/bench_p4_judge.py [--quick]
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from _bench import SEED, figure, main


def run(quick: bool) -> dict:
    from alpaca_farm_env.cli.evaluate import evaluate
    from alpaca_farm_env.data import list_annotated_models, resolve_data_dir
    from alpaca_farm_env.judge import features, judge

    root = Path(resolve_data_dir(None))
    annotated = set(list_annotated_models(root))
    model = next(m for m in sorted(os.listdir(root / "alpaca_eval_results"))
                 if m not in annotated and (root / "alpaca_eval_results" / m / "model_outputs.json").is_file())
    outputs = json.loads((root / "alpaca_eval_results" / model / "model_outputs.json").read_text())
    calls = {"compare": 0, "pairs": 0, "encoded": 0}
    orig_compare, orig_encode = judge.DistilledJudge.compare, features.MiniLMEncoder.encode

    def counting_compare(self, instructions, *a, **k):
        calls["compare"] += 1
        calls["pairs"] += len(instructions)
        return orig_compare(self, instructions, *a, **k)

    def counting_encode(self, texts, *a, **k):
        before = self.n_encoded
        try:
            return orig_encode(self, texts, *a, **k)
        finally:
            calls["encoded"] += self.n_encoded - before

    judge.DistilledJudge.compare, features.MiniLMEncoder.encode = counting_compare, counting_encode
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model_outputs.json"
            path.write_text(json.dumps(outputs[:40] if quick else outputs))
            t0 = time.perf_counter()
            first = evaluate(model_outputs=str(path), output_dir=tmp, seed=SEED, progress=False)
            t1 = time.perf_counter()
            first_calls = dict(calls)
            calls.update(compare=0, pairs=0, encoded=0)
            again = evaluate(model_outputs=str(path), output_dir=tmp, seed=SEED, progress=False)
            t2 = time.perf_counter()
    finally:
        judge.DistilledJudge.compare, features.MiniLMEncoder.encode = orig_compare, orig_encode
    n = first["n_total"] + first.get("n_unlabeled", 0)
    assert again["win_rate"] == first["win_rate"] and again["n_from_cache"] == n
    return {"item": "P4", "figures": [
        figure("P4a", "judge calls of the cached re-evaluation", calls["compare"], 0, "==", "",
               f"{again['n_from_cache']} of {n} pairs from the cache; same win-rate {again['win_rate']:.2f}"),
        figure("P4b", "cached re-evaluation time / first evaluation", (t2 - t1) / (t1 - t0), 0.1, "<=", "x",
               f"first: {n} pairs of {model} in {t1 - t0:.1f} s ({n / (t1 - t0):.1f} pairs/s incl. judge load; "
               f"{first_calls['compare']} member calls; {first_calls['encoded']} texts through the MiniLM encoder: the "
               f"eval prompts are in the answer bank, whose TF-IDF heads score them); cached: {t2 - t1:.2f} s"),
    ], "raw": {"first_s": t1 - t0, "cached_s": t2 - t1, "first_calls": first_calls, "model": model}}


if __name__ == "__main__":
    main(run, __doc__)
