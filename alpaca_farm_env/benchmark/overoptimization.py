"""Over-optimization, AlpacaFarm's key qualitative finding (paper Sec. 5 / Fig. 5, App. E.1): optimizing a proxy
reward model first raises, then lowers the win-rate judged by the (noise-free) evaluator.

``run_overoptimization`` traces two curves on the same eval instructions, each point = (mean proxy reward, win-rate):

* **best-of-n over n**: ``max(ns)`` samples per instruction from the SFT policy (temperature 1.0, as best-of-n), each
  scored by the proxy reward model; best-of-n for each ``n`` keeps the highest-scored of the first ``n`` samples (one
  sampling serves every n);
* **PPO over steps**: the ``ppo`` agent trained against the same reward model on the ``unlabeled`` env, evaluated every
  ``eval_every`` steps through its ``eval_hook`` (its current policy answers the eval instructions at the
  benchmark's temperature); step 0 is the SFT policy.

Both quantities come through the env, by the benchmark's own evaluation path (``scoring.EvalScorer``): the proxy
reward is the mean return of an eval-split ``AlpacaFarm-v0`` vector env whose reward is the reward model, the
win-rate that of one whose reward is the evaluator (P(the response beats Davinci003), noise-free, instruction-keyed).
The shared stages (SFT policy, preferences, reward model) are the benchmark's, cached in the run dir; every point is
appended to ``points.jsonl`` as it is measured, so a killed run resumes (PPO from its checkpoint) without measuring a
point twice. Writes ``overoptimization.csv`` and ``overoptimization.png`` (x: proxy reward, y: win-rate, one line
per method).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError
from ..tracking import untracked
from ..utils import atomic_write_text, digest, stable_hash
from .config import BenchmarkConfig
from .pipeline import Pipeline, make_env
from .runner import eval_instructions
from .scoring import EvalScorer, EvalSplit

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
    from ..agents.common import reward_of_stage

    log = log or (lambda m: None)
    ns = sorted({int(n) for n in ns})
    ppo_fields = _check(cfg, ns, ppo, eval_every)
    run_dir = Path(run_dir)
    folder = run_dir / "overoptimization"
    folder.mkdir(parents=True, exist_ok=True)

    pipeline = Pipeline(cfg, run_dir, data_dir, progress, log)
    rows = eval_instructions(cfg, data_dir)  # the benchmark's eval subset
    reward_stage, rm_key = pipeline.reward_model()
    reward, reward_kwargs = reward_of_stage(reward_stage)
    split = EvalSplit.from_config(cfg, cfg.annotator_kwargs, data_dir)
    scorer = EvalScorer(split, rows, reward=reward, reward_kwargs=reward_kwargs)
    key = digest({"sft": pipeline.sft_key(), "reward_model": rm_key, "evaluator": cfg.annotator,
                  "evaluator_kwargs": cfg.annotator_kwargs, "rows": [r["row_index"] for r in rows],
                  "generation": dataclasses.asdict(cfg.generation), "ppo": untracked(ppo_fields), "ns": ns})[:12]
    points = _Points(folder / f"points-{key}.jsonl", log)

    t0 = time.time()
    _best_of_n_points(cfg, pipeline, scorer, ns, points, progress)
    t_bon = round(time.time() - t0, 1)
    t0 = time.time()
    _ppo_points(cfg, pipeline, scorer, ppo_fields, eval_every, points, folder / f"ppo-{key}", progress)
    t_ppo = round(time.time() - t0, 1)

    result = _write_curves(cfg, folder, sorted(points.done.values(), key=lambda p: (p["method"], p["x"])), len(rows))
    result = {"key": key, "n_eval": len(rows), "ns": ns, "ppo": ppo_fields, **result,
              "seconds": {"best_of_n": t_bon, "ppo": t_ppo}}
    atomic_write_text(folder / "overoptimization.json", json.dumps(result, indent=1))
    return result


def _check(cfg: BenchmarkConfig, ns: list[int], ppo: dict[str, Any] | None, eval_every: int) -> dict[str, Any]:
    """Refuse bad settings before any work; returns the PPO config fields (with ``eval_steps = eval_every``)."""
    from ..agents.ppo import PPOConfig
    from ..validation import check_fields

    if not ns or ns[0] < 1:
        raise ConfigError(f"best-of-n sizes must be >= 1, got {list(ns)}")
    if eval_every < 1:
        raise ConfigError(f"eval_every must be >= 1, got {eval_every}")
    cfg.validate(f"config {cfg.name!r}")
    if cfg.policy is None:
        raise ConfigError(f"preset {cfg.name!r} needs a policy: pass --policy")
    ppo_fields = dict(ppo if ppo is not None else (cfg.methods.get("ppo", {}).get("config") or {}))
    ppo_fields["eval_steps"] = eval_every
    check_fields(PPOConfig, {k: v for k, v in ppo_fields.items() if k != "total_steps" or v != 0}, "--ppo",
                 prefix="ppo.")  # total_steps 0: best-of-n and the SFT point only
    return ppo_fields


class _Points:
    """The measured points by ``(method, x)``, appended to a JSONL file as measured (a killed run resumes from it;
    a torn last line is ignored)."""

    def __init__(self, path: Path, log: Callable[[str], None]):
        self.path, self.log = path, log
        self.done = _read_points(path)

    def __contains__(self, key: tuple[str, float]) -> bool:
        return key in self.done

    def add(self, point: dict[str, Any]) -> None:
        self.done[(point["method"], point["x"])] = point
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(point) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.log(f"{point['method']} {point['x']:g}: proxy reward {point['proxy_reward']:.3f}, win-rate "
                 f"{point['win_rate']:.1f}")


def _best_of_n_points(cfg: BenchmarkConfig, pipeline: Pipeline, scorer: EvalScorer, ns: list[int], points: _Points,
                      progress: bool) -> None:
    """Best-of-n for each ``n``: one sampling of ``max(ns)`` candidates per instruction from the SFT policy, each
    scored by the proxy; ``n`` keeps the highest-scored of the first ``n`` (ties: the earliest)."""
    from ..agents.best_of_n import BestOfNConfig

    if all(("best_of_n", float(n)) in points for n in ns):
        return
    gen, bon = cfg.generation, BestOfNConfig()
    prompts = [o["prompt"] for o in scorer.observations()]
    cands = pipeline.sft_policy().generate(
        prompts, max_new_tokens=gen.max_new_tokens, temperature=bon.temperature, top_p=bon.top_p,
        num_return_sequences=ns[-1], progress=progress,
        batch_size=max(1, gen.batch_size // ns[-1]),  # sequences per call as the benchmark's
        seed=stable_hash("overoptimization", "best_of_n", gen.seed))
    cands = [[s.strip() for s in group] for group in cands]
    scores = [scorer.proxy([c[j] for c in cands]) for j in range(ns[-1])]  # scores[j][i]: sample j of prompt i
    for n in ns:
        if ("best_of_n", float(n)) in points:
            continue
        best = [max(range(n), key=lambda j: (scores[j][i], -j)) for i in range(len(prompts))]
        points.add(scorer.point("best_of_n", float(n), [cands[i][j] for i, j in enumerate(best)],
                                [scores[j][i] for i, j in enumerate(best)]))


def _ppo_points(cfg: BenchmarkConfig, pipeline: Pipeline, scorer: EvalScorer, ppo_fields: dict[str, Any],
                eval_every: int, points: _Points, fit_dir: Path, progress: bool) -> None:
    """PPO over steps: step 0 is the SFT policy; then the ``ppo`` agent, trained against the reward-model stage,
    is measured at every ``eval_every`` steps through its ``eval_hook`` (its current policy answers)."""
    from ..agents import make_agent
    from ..agents.base import attach
    from ..agents.ppo import PPOAgent, PPOConfig
    from ..agents.sft import BaseAgent

    observations = scorer.observations()
    if ("ppo", 0.0) not in points:
        base = make_agent("base", policy=pipeline.sft_policy(), progress=progress,
                          **cfg.generation.for_agent(BaseAgent))
        points.add(scorer.point("ppo", 0.0, base.respond(observations)))
    total = int(ppo_fields.get("total_steps", PPOConfig.total_steps))
    if all(("ppo", float(s)) in points for s in range(eval_every, total + 1, eval_every)):
        return

    def hook(agent: Any) -> dict[str, Any]:
        step = float(agent.history[-1]["step"])  # the step just trained
        if ("ppo", step) in points:
            return {}
        p = scorer.point("ppo", step, agent.respond(observations))
        points.add(p)
        return {"proxy_reward": p["proxy_reward"], "win_rate": p["win_rate"]}

    agent = make_agent("ppo", policy=None, config=ppo_fields, progress=progress, **cfg.generation.for_agent(PPOAgent))
    attach(agent, evaluator=cfg.annotator, eval_hook=hook)
    envs = {name: make_env(spec, pipeline.data_dir) for name, spec in PPOAgent.ENVS.items()}
    stages, _ = pipeline.stages_for(PPOAgent, "ppo", fit_dir, given={})
    agent.fit(envs, **stages)


def _write_curves(cfg: BenchmarkConfig, folder: Path, points: list[dict[str, Any]], n_rows: int) -> dict[str, Any]:
    """Write ``overoptimization.csv`` and ``.png``; returns ``points``, ``csv``, ``png`` and, per method, its peak
    win-rate, its last point and whether the win-rate rose then fell."""
    from . import report

    csv_path = folder / "overoptimization.csv"
    lines = [",".join(CSV_FIELDS)] + [",".join(f"{p[k]:.6g}" if isinstance(p[k], float) else str(p[k])
                                               for k in CSV_FIELDS) for p in points]
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    png = report.overoptimization_chart(points, folder / "overoptimization.png",
                                        title=f"{cfg.name}: {n_rows} eval instructions, evaluator {cfg.annotator}")
    peaks = {}
    for method in ("best_of_n", "ppo"):
        mine = [p for p in points if p["method"] == method]
        if mine:
            top = max(mine, key=lambda p: p["win_rate"])
            last = max(mine, key=lambda p: p["x"])
            peaks[method] = {"peak_x": top["x"], "peak_win_rate": top["win_rate"], "last_x": last["x"],
                             "last_win_rate": last["win_rate"], "rise_then_fall": _rise_then_fall(mine)}
    return {"points": points, "csv": str(csv_path), "png": png, "peaks": peaks}


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
