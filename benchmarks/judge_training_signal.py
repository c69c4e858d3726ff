"""The training signal a pipeline's preference and reward-model stages carry: how far the noisy labels agree with the
noise-free pool, how much of the labels length alone decides, how many pairs the judge's coherence gate decides, and
the reward model's held-out accuracy against the noisy labels and against the noise-free pool.

    python benchmarks/judge_training_signal.py runs/cpu_all_signal [--data-dir DIR]

Reads ``<run_dir>/stages/preferences-*/preferences.jsonl`` and ``<run_dir>/stages/reward_model-*/model`` (the
first of each; pass a run dir with one of each). The held-out pairs are the reward model's own (the same
``held_out_split`` of the usable pairs with the training seed). A measurement, not a test: no threshold is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Share of pairs where two preference vectors (1 or 2; 1.5 = a tie, left out) agree, and how many counted."""
    m = (a != 1.5) & (b != 1.5)
    return float((a[m] == b[m]).mean()) if m.any() else float("nan"), int(m.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--data-dir", default=os.environ.get("ALPACA_FARM_DATA_DIR"))
    args = ap.parse_args()
    from alpaca_farm_env.annotators import make_annotator
    from alpaca_farm_env.data import format_prompt
    from alpaca_farm_env.rewards.reward_model import RewardModelReward, held_out_split

    run = Path(args.run_dir)
    pref_file = next(run.glob("stages/preferences-*/preferences.jsonl"))
    rows = [json.loads(line) for line in pref_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    usable = [r for r in rows if r.get("preference") in (1, 2, 1.0, 2.0) and r["output_1"] != r["output_2"]]
    instructions = [r["instruction"] for r in usable]
    inputs = [r.get("input") or "" for r in usable]
    o1, o2 = [r["output_1"] for r in usable], [r["output_2"] for r in usable]
    pooled = make_annotator("pooled", data_dir=args.data_dir)
    clean = np.array([a.preference for a in pooled.compare(instructions, inputs, o1, o2, seed=0)], dtype=float)
    noisy = np.array([float(r["preference"]) for r in usable])
    l1, l2 = np.array([len(o) for o in o1]), np.array([len(o) for o in o2])
    longer = np.where(l2 > l1, 2.0, np.where(l1 > l2, 1.0, 1.5))
    member = next(iter(pooled.members.values()))
    junk = np.stack([member.junk(instructions, inputs, o1), member.junk(instructions, inputs, o2)])
    out = {"pairs": len(rows), "usable": len(usable),
           "noisy_vs_noise_free": agreement(noisy, clean), "longer_vs_noisy": agreement(longer, noisy),
           "longer_vs_noise_free": agreement(longer, clean),
           "gate_one_side": float((junk.max(0) > 0.05).mean()), "gate_both_sides": float((junk.min(0) > 0.05).mean())}
    rm_dirs = sorted(run.glob("stages/reward_model-*/model"))
    if rm_dirs and (rm_dirs[0] / "summary.json").is_file():
        summary = json.loads((rm_dirs[0] / "summary.json").read_text())
        seed = (summary.get("config") or {}).get("seed", 42) if isinstance(summary.get("config"), dict) else 42
        _, held = held_out_split(len(usable), summary["n_eval"], seed)
        rm = RewardModelReward(model_name_or_path=str(rm_dirs[0]))
        prompts = [format_prompt(instructions[i], inputs[i]) for i in held]
        s1 = np.array(rm.score(prompts, [o1[i] for i in held]))
        s2 = np.array(rm.score(prompts, [o2[i] for i in held]))
        rm_pref = np.where(s2 > s1, 2.0, np.where(s1 > s2, 1.0, 1.5))
        out.update({"reward_model": str(rm_dirs[0]), "summary_eval_accuracy": summary.get("eval_accuracy"),
                    "n_train": summary.get("n_train"), "n_held_out": len(held),
                    "rm_vs_noisy": agreement(rm_pref, noisy[held]), "rm_vs_noise_free": agreement(rm_pref, clean[held]),
                    "longer_vs_noisy_held_out": agreement(longer[held], noisy[held]),
                    "longer_vs_noise_free_held_out": agreement(longer[held], clean[held]),
                    "rm_prefers_longer": agreement(rm_pref, longer[held])})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
