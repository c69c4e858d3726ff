"""Over-optimization, AlpacaFarm's key qualitative finding (paper Sec. 5 / Fig. 5, App. E.1): optimizing a proxy
reward model first raises, then lowers the win-rate judged by the (noise-free) evaluator.

``run_overoptimization`` traces two curves on the same eval instructions, each point = (mean proxy reward, win-rate):

* **best-of-n over n**: ``max(ns)`` samples per instruction from the SFT policy (temperature 1.0, as best-of-n), each
  scored by the proxy reward model; best-of-n for each ``n`` keeps the highest-scored of the first ``n`` samples (one
  sampling serves every n);
* **PPO over steps**: the ``ppo`` agent trained against the same reward model on the ``unlabeled`` env, evaluated every
  ``eval_every`` steps through its ``evaluate`` hook (its current policy answers the eval instructions at the
  benchmark's temperature); step 0 is the SFT policy.

Both quantities come through the env, as in the benchmark: the proxy reward is the mean return of an eval-split
``AlpacaFarm-v0`` vector env whose reward is the reward model, the win-rate that of one whose reward is the evaluator
(P(the response beats Davinci003), noise-free, instruction-keyed). The shared stages (SFT policy, preferences, reward
model) are the benchmark's, cached in the run dir; every point is appended to ``points.jsonl`` as it is measured, so a
killed run resumes (PPO from its checkpoint) without measuring a point twice. Writes ``overoptimization.csv`` and
``overoptimization.png`` (x: proxy reward, y: win-rate, one line per method).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError
from ..utils import atomic_write_text, digest, stable_hash
from .config import BenchmarkConfig, eval_subset
from .pipeline import Pipeline, make_env
from .scoring import EvalScorer

DEFAULT_NS = (1, 2, 4, 8, 16)  # the paper sweeps n up to 1024 (Fig. 5, 12)
CSV_FIELDS = ("method", "x", "proxy_reward", "win_rate", "standard_error", "n", "avg_length")


def run_overoptimization(
    cfg: BenchmarkConfig,
    run_dir: str | os.PathLike,
    *,
    data_dir: Any = None,
    ns: Sequence[int] = DEFAULT_NS,
    ppo: dict[str, Any] | None = None,
    eval_every: int = 5,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Trace best-of-n over ``ns`` and PPO (``ppo``: :class:`~alpaca_farm_env.agents.ppo.PPOConfig` fields; the
    preset's ``methods.ppo.config`` by default) every ``eval_every`` steps, on ``cfg.n_eval`` eval instructions, against
    the pipeline's reward model. Returns ``{"points": [...], "csv": path, "png": path, "peaks": {...}}``."""
    from ..agents import make_agent
    from ..agents.best_of_n import BestOfNConfig
    from ..agents.common import reward_of_stage
    from ..annotators import with_data_dir
    from . import report

    log = log or (lambda m: None)
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 1:
        raise ConfigError(f"best-of-n sizes must be >= 1, got {list(ns)}")
    if eval_every < 1:
        raise ConfigError(f"eval_every must be >= 1, got {eval_every}")
    cfg.validate(f"config {cfg.name!r}")
    if cfg.policy is None:
        raise ConfigError(f"preset {cfg.name!r} needs a policy: pass --policy")
    ppo_fields = dict(ppo if ppo is not None else (cfg.methods.get("ppo", {}).get("config") or {}))
    ppo_fields["eval_steps"] = eval_every
    from ..agents.ppo import PPOConfig

    from ..validation import check_fields

    check_fields(PPOConfig, {k: v for k, v in ppo_fields.items() if k != "total_steps" or v != 0}, "--ppo",
                 prefix="ppo.")  # total_steps 0: best-of-n and the SFT point only
    run_dir = Path(run_dir)
    folder = run_dir / "overoptimization"
    folder.mkdir(parents=True, exist_ok=True)

    pipeline = Pipeline(cfg, run_dir, data_dir, progress, log)
    eval_env = make_env({"id": "AlpacaFarm-v0", "split": "eval", "reference": cfg.reference, "reward": "length",
                         "shuffle": False}, data_dir)
    rows = eval_subset(eval_env.unwrapped.rows, cfg.n_eval, cfg.subset_seed)
    reward_stage, rm_key = pipeline.reward_model()
    reward, reward_kwargs = reward_of_stage(reward_stage)
    scorer = EvalScorer(cfg, rows, with_data_dir(cfg.annotator, cfg.annotator_kwargs, data_dir), data_dir,
                        reward=reward, reward_kwargs=reward_kwargs)
    gen = cfg.generation
    key = digest({"sft": pipeline.sft_key(), "reward_model": rm_key, "evaluator": cfg.annotator,
                  "evaluator_kwargs": cfg.annotator_kwargs, "rows": [r["row_index"] for r in rows],
                  "generation": dataclasses.asdict(gen), "ppo": ppo_fields, "ns": ns})[:12]
    points_path = folder / f"points-{key}.jsonl"
    done = _read_points(points_path)
    observations = scorer.observations()
    prompts = [o["prompt"] for o in observations]

    def add(point: dict[str, Any]) -> None:
        done[(point["method"], point["x"])] = point
        with open(points_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(point) + "\n")
            f.flush()
            os.fsync(f.fileno())
        log(f"{point['method']} {point['x']:g}: proxy reward {point['proxy_reward']:.3f}, win-rate "
            f"{point['win_rate']:.1f}")

    # ---- best-of-n over n: one sampling of max(ns) candidates serves every n
    t0 = time.time()
    if any(("best_of_n", float(n)) not in done for n in ns):
        bon = BestOfNConfig()
        sft = pipeline.sft_policy()
        cands = sft.generate(prompts, max_new_tokens=gen.max_new_tokens, temperature=bon.temperature, top_p=bon.top_p,
                             num_return_sequences=ns[-1], progress=progress,
                             batch_size=max(1, gen.batch_size // ns[-1]),  # sequences per call as the benchmark's
                             seed=stable_hash("overoptimization", "best_of_n", gen.seed))
        cands = [[s.strip() for s in group] for group in cands]
        scores = [scorer.proxy([c[j] for c in cands]) for j in range(ns[-1])]  # scores[j][i]: sample j of prompt i
        for n in ns:
            if ("best_of_n", float(n)) in done:
                continue
            best = [max(range(n), key=lambda j: (scores[j][i], -j)) for i in range(len(rows))]
            add(scorer.point("best_of_n", float(n), [cands[i][j] for i, j in enumerate(best)],
                             [scores[j][i] for i, j in enumerate(best)]))
    t_bon = round(time.time() - t0, 1)

    # ---- PPO over steps, through its evaluate hook (step 0: the SFT policy)
    t0 = time.time()
    agent_kwargs = {"max_new_tokens": gen.max_new_tokens, "temperature": gen.temperature, "top_p": gen.top_p,
                    "batch_size": gen.batch_size, "seed": gen.seed, "progress": progress}
    if ("ppo", 0.0) not in done:
        base = make_agent("base", policy=pipeline.sft_policy(), **agent_kwargs)
        add(scorer.point("ppo", 0.0, base.respond(observations)))
    total = int(ppo_fields.get("total_steps", PPOConfig.total_steps))
    if any(("ppo", float(s)) not in done for s in range(eval_every, total + 1, eval_every)):
        from ..agents.ppo import PPOAgent

        def hook(agent: Any) -> dict[str, Any]:
            step = float(agent.history[-1]["step"])  # the step just trained
            if ("ppo", step) in done:
                return {}
            p = scorer.point("ppo", step, agent.respond(observations))
            add(p)
            return {"proxy_reward": p["proxy_reward"], "win_rate": p["win_rate"]}

        agent = make_agent("ppo", policy=None, config=ppo_fields, evaluate=hook, evaluator=cfg.annotator,
                           **agent_kwargs)
        envs = {name: make_env(spec, data_dir) for name, spec in PPOAgent.ENVS.items()}
        stages, _ = pipeline.stages_for(PPOAgent, "ppo", folder / f"ppo-{key}", given={})
        agent.fit(envs, **stages)
    t_ppo = round(time.time() - t0, 1)

    points = sorted(done.values(), key=lambda p: (p["method"], p["x"]))
    csv_path = folder / "overoptimization.csv"
    lines = [",".join(CSV_FIELDS)] + [",".join(f"{p[k]:.6g}" if isinstance(p[k], float) else str(p[k])
                                               for k in CSV_FIELDS) for p in points]
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    png = report.overoptimization_chart(points, folder / "overoptimization.png",
                                        title=f"{cfg.name}: {len(rows)} eval instructions, evaluator {cfg.annotator}")
    peaks = {}
    for method in ("best_of_n", "ppo"):
        mine = [p for p in points if p["method"] == method]
        if mine:
            top = max(mine, key=lambda p: p["win_rate"])
            last = max(mine, key=lambda p: p["x"])
            peaks[method] = {"peak_x": top["x"], "peak_win_rate": top["win_rate"], "last_x": last["x"],
                             "last_win_rate": last["win_rate"], "rise_then_fall": _rise_then_fall(mine)}
    result = {"key": key, "n_eval": len(rows), "ns": ns, "ppo": ppo_fields, "points": points, "csv": str(csv_path), "png": png, "peaks": peaks,
              "seconds": {"best_of_n": t_bon, "ppo": t_ppo}}
    atomic_write_text(folder / "overoptimization.json", json.dumps(result, indent=1))
    return result


def _rise_then_fall(points: list[dict[str, Any]]) -> bool:
    """Whether the win-rate peaks strictly inside the sweep: above both its first and its last point."""
    pts = sorted(points, key=lambda p: p["x"])
    if len(pts) < 3:
        return False
    top = max(pts, key=lambda p: p["win_rate"])
    return top["win_rate"] > pts[0]["win_rate"] and top["win_rate"] > pts[-1]["win_rate"]


def _read_points(path: Path) -> dict[tuple[str, float], dict[str, Any]]:
    """Points measured by an earlier (killed) run; a torn last line is ignored."""
    done: dict[tuple[str, float], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                p = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(p["method"], float(p["x"]))] = p
    return done
