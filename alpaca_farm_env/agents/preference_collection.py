"""Preference collection: the pairs a reward model learns from, gathered through ``AlpacaFarmPairwise-v0``.

AlpacaFarm's PREF data (paper Sec. 4.1; released as the Hugging Face dataset ``tatsu-lab/alpaca_farm``, configs
``alpaca_noisy_multi_preference`` and ``alpaca_human_preference``): for every instruction of the ``preference`` split,
**two outputs sampled from SFT10k at temperature 1.0** (top_p 1.0, at most 300 new tokens, as every AlpacaFarm
sample), labelled by the simulated annotator pool with label noise (``noisy_pooled``, p_sim^ann). Here the pair is
the action of a vector pairwise env and the env's annotator labels it, one annotation call per vector step.

The caller makes the env, e.g.::

    envs = gym.make_vec("AlpacaFarmPairwise-v0", num_envs=8, split="preference", annotator="noisy_pooled",
                        seed_mode="instruction", shuffle=False)
    rows = collect_preferences(policy, envs, config=CollectionConfig(), output_path="run/preferences.jsonl")

``seed_mode="instruction"`` keys the annotator's noise and pool member on the instruction (alpaca_eval's draws for a
dataset annotated once), so a resumed run labels the same pairs the same way.

Order and coverage. The instructions are the env's rows (``envs.unwrapped.demonstrations``), in the env's order; the
first ``n_instructions`` of them (all when ``None``) are each visited exactly once: every step resets the ``num_envs``
sub-envs to the next positions (``reset(options={"index": positions})``), so the env's own shuffling never repeats
or skips one. The last step may hold fewer than ``num_envs`` instructions: its free slots repeat the step's last
instruction with the very same pair (nothing extra is generated; the step is still ONE annotation call of
``num_envs`` pairs) and their labels are dropped.

Rows (AlpacaFarm's layout, ``alpaca_human_preference`` / ``alpaca_noisy_multi_preference``): ``instruction``,
``input``, ``output_1``, ``output_2``, ``preference`` (1 = output_1 preferred, 2 = output_2, 1.5 = draw, ``None`` =
the annotator gave no label), plus ``annotator`` (the pool member that answered). Two identical outputs are a draw
(1.5) whatever the annotator said (tatsu-lab/alpaca_farm ``src/alpaca_farm/auto_annotations/pairwise_annotators.py``
``PairwiseAutoAnnotator._preprocess`` marks them 0, the legacy draw): they stay in the AlpacaFarm file and are
dropped from TRL's format (:func:`to_trl_preference`) and from reward-model training, whose Bradley-Terry loss has no
draws.

Resume. Rows are appended to ``output_path`` (JSONL) after every step and fsynced; a rerun reads the file, skips the
instructions already there (by ``(instruction, input)``, with multiplicity) and continues. A line torn by a kill is cut
off before appending. Samples are seeded per step (``seed`` and the step's prompts), so a resumed run with the same
``num_envs`` draws what the uninterrupted run would have drawn.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..envs.reward_info import format_prompt
from ..utils import stable_hash
from .common import read_jsonl

ROW_KEYS = ("instruction", "input", "output_1", "output_2", "preference", "annotator")


@dataclass
class CollectionConfig:
    """Sampling of the preference pairs: two samples from SFT10k at temperature 1.0 (paper Sec. 4.1), top_p 1.0 as
    the reference's rollouts (tatsu-lab/alpaca_farm ``src/alpaca_farm/models/rl_models.py``
    ``AutoregressivePolicy._respond``), at most 300 new tokens as every AlpacaFarm sample (paper Sec. 4.1)."""

    n_instructions: int | None = None  # the first n of the env's instructions; None: all of them (paper: PREF, 10k)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 300
    batch_size: int = 8  # prompts per generate call (a vector step of num_envs prompts is split into these)
    seed: int = 0  # sampling seed (per step, with the step's prompts) and the env's first reset seed


def _preference_of(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v  # NaN -> unlabeled


def collect_preferences(
    policy: Any,
    envs: Any,
    *,
    config: CollectionConfig,
    output_path: str | os.PathLike,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Sample two responses per instruction from ``policy``, have ``envs`` (a vector ``AlpacaFarmPairwise-v0``)
    label each pair, append the rows to ``output_path`` after every step, and return all rows of the file (resumed
    ones first, in the env's instruction order)."""
    from tqdm.auto import tqdm

    base = getattr(envs, "unwrapped", envs)
    num_envs = int(getattr(base, "num_envs", 0) or 0)
    if num_envs < 1 or not hasattr(base, "demonstrations"):
        raise TypeError("collect_preferences needs a vector AlpacaFarmPairwise-v0 env (gym.make_vec(...)), "
                        f"got {type(envs).__name__}")
    if config.temperature <= 0:
        raise ValueError("preference pairs are sampled (temperature > 0); greedy decoding gives identical outputs")
    demos = base.demonstrations
    n = len(demos) if config.n_instructions is None else min(int(config.n_instructions), len(demos))
    if n < 1:
        raise ValueError(f"n_instructions must be >= 1, got {config.n_instructions}")

    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done_rows = read_jsonl(path)
    done = Counter((r["instruction"], r["input"]) for r in done_rows)
    todo = []
    for pos in range(n):
        key = (demos[pos]["instruction"], demos[pos]["input"])
        if done[key] > 0:
            done[key] -= 1
        else:
            todo.append(pos)

    bar = tqdm(total=n, initial=n - len(todo), desc="collect preferences", unit="instr", disable=not progress)
    new_rows: list[dict[str, Any]] = []
    first_reset = True
    try:
        with open(path, "a", encoding="utf-8") as f:
            for start in range(0, len(todo), num_envs):
                real = todo[start : start + num_envs]
                positions = real + [real[-1]] * (num_envs - len(real))  # a last partial step: repeat its last one
                obs, _ = envs.reset(seed=config.seed if first_reset else None, options={"index": positions})
                first_reset = False
                prompts = [obs["prompt"][i] for i in range(len(real))]
                samples = policy.generate(
                    prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                    top_p=config.top_p, do_sample=True, num_return_sequences=2, batch_size=config.batch_size,
                    seed=stable_hash("collect_preferences", config.seed, *prompts))
                pairs = [(g[0].strip(), g[1].strip()) for g in samples]
                pairs += [pairs[-1]] * (num_envs - len(real))
                _, _, _, _, infos = envs.step(pairs)  # ONE annotation call for the whole step
                final = infos["final_info"]
                rows = []
                for i in range(len(real)):
                    o1, o2 = pairs[i]
                    pref = 1.5 if o1 == o2 else _preference_of(final["preference"][i])
                    rows.append({"instruction": obs["instruction"][i], "input": obs["input"][i], "output_1": o1,
                                 "output_2": o2, "preference": pref, "annotator": str(final["annotator"][i])})
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                f.flush()
                os.fsync(f.fileno())  # a killed run keeps every finished step
                new_rows.extend(rows)
                bar.update(len(real))
    finally:
        bar.close()
    return done_rows + new_rows


def to_trl_preference(rows: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """AlpacaFarm rows -> TRL's preference format ``{prompt, chosen, rejected}`` (the AlpacaFarm prompt template;
    the outputs as they are, no EOS). Draws (1.5, identical outputs) and unlabeled rows are dropped."""
    out = []
    for r in rows:
        pref = _preference_of(r.get("preference"))
        if pref not in (1.0, 2.0) or r["output_1"] == r["output_2"]:
            continue
        chosen, rejected = (r["output_1"], r["output_2"]) if pref == 1.0 else (r["output_2"], r["output_1"])
        out.append({"prompt": format_prompt(r["instruction"], r.get("input") or ""), "chosen": chosen,
                    "rejected": rejected})
    return out
