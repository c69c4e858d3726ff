"""P7: what the coherence gate costs the judge (judge/coherence.py, judge/lm_evidence.py).

P7a: a judged RL step: ``noisy_pooled`` comparing 16 new responses (60 words each, never scored on this machine) with
their rows' references on ``unlabeled`` prompts, the references already scored (as after the first step of a run).
Target: at most 2 s. P7b: 805 new outputs on the eval instructions (a model outside the answer bank, each output
made new by a suffix) through ``pooled``. Target: at most 60 s. Each beside the same judge's heads alone
(``DistilledJudge.head_scores``, no gate) on the same texts: the ratio is the gate's price. The language model and
the encoder are loaded before timing.

    python benchmarks/bench_p7_judge_gate.py [--quick]
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from _bench import figure, main


def run(quick: bool) -> dict:
    from alpaca_farm_env.annotators import make_annotator
    from alpaca_farm_env.data import resolve_data_dir
    from alpaca_farm_env.envs.source import load_rows
    from alpaca_farm_env.judge.lm_evidence import shared_lm_evidence

    root = Path(resolve_data_dir(None))
    noisy = make_annotator("noisy_pooled", data_dir=str(root))
    member = next(iter(noisy.members.values()))
    shared_lm_evidence().scores(["Load the model once, before anything is timed, with a few words."])
    rows = load_rows("unlabeled", data_dir=str(root))
    donor = json.loads((root / "alpaca_eval_results" / "vicuna-7b" / "model_outputs.json").read_text())
    steps, heads_only = [], []
    for b in range(2 if quick else 4):
        batch = rows[16 * b: 16 * b + 16]
        ins, inp = [r["instruction"] for r in batch], [r["input"] for r in batch]
        refs = [r["reference_output"] for r in batch]
        noisy.compare(ins, inp, refs, refs)  # the references are scored once per run
        outs = [" ".join(d["output"].split()[:60]) + f" ({uuid.uuid4().hex[:6]})" for d in donor[16 * b: 16 * b + 16]]
        t0 = time.perf_counter()
        member.head_scores(ins, inp, outs)
        t1 = time.perf_counter()
        outs = [o + "." for o in outs]  # new texts again for the gated pass
        noisy.compare(ins, inp, refs, outs)
        t2 = time.perf_counter()
        heads_only.append(t1 - t0)
        steps.append(t2 - t1)
    step, head_step = sorted(steps)[len(steps) // 2], sorted(heads_only)[len(heads_only) // 2]

    pooled = make_annotator("pooled", data_dir=str(root))
    m0 = next(iter(pooled.members.values()))
    ev = load_rows("eval", data_dir=str(root))[: 40 if quick else 805]
    outs = json.loads((root / "alpaca_eval_results" / "guanaco-7b" / "model_outputs.json").read_text())
    by = {d["instruction"]: d["output"] for d in outs}
    keep = [e for e in ev if (e["instruction"] + ("\n\n" + e["input"] if e["input"] else "")) in by]
    ins, inp = [e["instruction"] for e in keep], [e["input"] for e in keep]
    new = [by[e["instruction"] + ("\n\n" + e["input"] if e["input"] else "")] + f" ({uuid.uuid4().hex[:6]})"
           for e in keep]
    m0.head_scores(ins[:1], inp[:1], [keep[0]["reference_output"]])  # loads the answer bank before timing
    t0 = time.perf_counter()
    m0.head_scores(ins, inp, new)
    t1 = time.perf_counter()
    pooled.compare(ins, inp, [e["reference_output"] for e in keep], [o + "." for o in new])
    t2 = time.perf_counter()
    return {"item": "P7", "figures": [
        figure("P7a", "judged RL step, 16 new responses (noisy_pooled, gate included)", step, 2.0, "<=", " s",
               f"median of {len(steps)} steps {[round(x, 2) for x in steps]}; the heads alone: {head_step:.2f} s, "
               f"so the gate costs {step / max(head_step, 1e-9):.1f}x the heads (SmolLM2 reads 2 x 24 tokens)"),
        figure("P7b", f"{len(keep)} new eval outputs (pooled, gate included)", t2 - t1, 60.0 if not quick else 10.0,
               "<=", " s", f"the heads alone: {t1 - t0:.1f} s ({(t2 - t1) / max(t1 - t0, 1e-9):.1f}x); the eval "
               "instructions' outputs are not read by the language model"),
    ], "raw": {"steps": steps, "heads_only": heads_only, "eval_s": t2 - t1, "eval_heads_s": t1 - t0}}


if __name__ == "__main__":
    main(run, __doc__)
