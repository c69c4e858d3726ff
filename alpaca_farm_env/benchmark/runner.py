"""``run_benchmark``: for each method, build its agent (the protocol of ``agents/base.py``), fit it (if it trains),
answer the eval subset through the eval-split env whose reward is the evaluator (``scoring.py``: the one evaluation
path, annotation against Davinci003 -> ``metrics.win_rate``), and write the run directory.

Run directory (default ``<runs_root>/<preset>-<config digest>``, so re-running the same command resumes)::

    config.json                      the resolved config
    <method>/generations.jsonl       generation cache, one line per output, appended per batch (resume)
    <method>/model_outputs.json      outputs in the alpaca_eval layout (instruction, output, generator, dataset)
    <method>/annotations.json        evaluator annotations vs Davinci003 (alpaca_eval layout; also the cache)
    <method>/annotations_vs_<m>.json evaluator annotations vs method <m>'s outputs (tiny: vs sft)
    <method>/record-<key>.json       the method's reward label and fit / generation seconds, as first measured, and
                                     which kept checkpoint was evaluated (``selection.py``)
    <method>/fit-<key>/              its training dir (checkpoints/step_<k>: the kept policies; selection/: val points)
    <method>/selection.png           the val win-rate by kept step, when the method selects by val
    results.json, results.md, results.png   a function of the run: a cached rerun writes the same (but `created`)
    last_run.json                    what the last invocation did: outputs generated, caches read, seconds

Every run's rows are also upserted into ``<runs_root>/leaderboard.json`` (see ``leaderboard.py``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..tracking import untracked
from ..utils import atomic_write_text, digest, file_lock, json_safe
from .config import BenchmarkConfig, eval_subset
from .evaluation import AnnotationCache, LazyAnnotator, annotate_pairs, to_alpaca_eval_layout
from .pipeline import Pipeline, make_env
from .rundir import append_generations, check_run_dir_owner, default_run_dir, read_generations, read_record
from .scoring import REFERENCE_NAME, EvalSplit, check_responses
from .selection import (check_n_select, output_key, select_checkpoint, select_of, training_hook,
                        with_kept_checkpoints)


@dataclass
class MethodResult:
    method: str
    label: str
    reward: str | None
    metrics: dict[str, Any]
    vs_baseline: dict[str, Any] | None
    outputs_path: str
    annotations_path: str
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # as recorded when produced (a rerun reads them back)
    paired: dict[str, Any] | None = None  # paired difference vs the compare_to method (report.paired_entry)
    preferences: list[Any] = field(default_factory=list)  # per eval row, vs Davinci003 (not in results.json)
    checkpoint: dict[str, Any] | None = None  # the kept checkpoint evaluated (selection.py); None: no checkpoints

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "preferences"}


RL_EVAL_ROWS = 16  # val instructions an RL agent's periodic win-rate uses (a trend in its eval.csv, not the result)


def _agent_kwargs(cfg: BenchmarkConfig, pipeline: Pipeline, method: str, factory: Any) -> dict[str, Any]:
    """An agent's constructor keywords: the preset's generation settings the agent declares (``GENERATION_KEYS``),
    then the method's own settings, then -- for the agent a shared stage is built with -- that stage's config."""
    kwargs = cfg.generation.for_agent(factory)
    kwargs.update({k: v for k, v in cfg.methods.get(method, {}).items() if k not in ("agent", "select")})
    for k, v in pipeline.stage_config(factory).items():
        kwargs.setdefault(k, v)
    kwargs = pipeline.tracked_kwargs(factory, kwargs)  # the preset's report_to, where the method sets none
    return with_kept_checkpoints(kwargs, select_of(cfg.methods.get(method, {}), factory))  # select: val / step:<k>


def method_label(method: str, settings: dict[str, Any], given_policy: bool = False) -> str:
    """The row's label: the method, its n and reward; "the given policy" for a row that answers with the preset's
    policy as it is while that policy is the SFT model (``stages.sft: null``)."""
    extras = ["the given policy"] if given_policy else []
    if "n" in settings:
        extras.append(f"n={settings['n']}")
    if settings.get("reward") is not None:
        extras.append(f"reward={settings['reward']}")
    return f"{method} ({', '.join(extras)})" if extras else method


def run_benchmark(
    cfg: BenchmarkConfig,
    *,
    run_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Run every method of ``cfg`` and write the run directory; returns the ``results.json`` content, plus
    ``"this_run"``: what this invocation did per method (outputs generated, generations and annotations read from the
    caches, seconds spent), which ``results.json`` leaves out so that a rerun's results equal the first run's.

    A run dir belongs to one preset: a run dir whose ``config.json`` holds other settings is refused unless ``force``
    (which then replaces the run dir's leaderboard rows)."""
    from ..agents import AGENTS
    from ..annotators import annotator_identity
    from ..context import RewardContext
    from ..rewards.annotator_reward import reward_is_evaluator
    from . import leaderboard

    log = log or (lambda m: print(m, file=sys.stderr))
    cfg.validate(f"config {cfg.name!r}")  # every key, type and name, before any compute
    if cfg.policy is None:
        raise ConfigError(f"preset {cfg.name!r} needs a policy: pass --policy (e.g. the path of your SFT10k model)")
    if cfg.compare_to is not None and cfg.compare_to not in cfg.methods:
        log(f"compare_to={cfg.compare_to!r} is not among the methods run; no second baseline column")
    factories = {m: AGENTS.resolve(cfg.methods[m].get("agent", m)) for m in cfg.methods}  # unknown names fail here
    evaluator_kwargs = dict(cfg.annotator_kwargs)
    evaluator_id = annotator_identity(cfg.annotator, context=RewardContext.of(data_dir), **evaluator_kwargs)
    for m, kw in cfg.methods.items():  # refuse before any compute (the agent checks again)
        if "reward" in kw and reward_is_evaluator(kw["reward"], kw.get("reward_kwargs"), cfg.annotator,
                                                  cfg.annotator_kwargs, data_dir):
            raise ConfigError(f"method {m!r} would rerank with the evaluator's judge ({cfg.annotator!r}); that "
                              "overstates the gain. Choose another reward (e.g. --reward length)")

    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg, evaluator_id)
    leaderboard.load_leaderboard(run_dir.parent)  # a corrupt leaderboard fails now, not after all the generation
    check_run_dir_owner(run_dir, cfg, force)
    eval_rows = eval_instructions(cfg, data_dir)  # n_eval beyond the eval set fails here
    check_n_select(cfg, factories, data_dir)  # and n_select beyond the val split
    run_dir.mkdir(parents=True, exist_ok=True)
    # one run at a time per run dir: a second one would append the same generations to the same caches
    with file_lock(run_dir / "run", timeout=0, busy=f"{run_dir}: another benchmark is running in this run dir; wait "
                   "for it (a rerun then resumes from its caches) or pass another --run-dir"):
        return _run_in(_Run(cfg, run_dir, data_dir, progress, log, factories, eval_rows, evaluator_kwargs,
                            evaluator_id), replace_rows=force)


def eval_instructions(cfg: BenchmarkConfig, data_dir: Any) -> list[dict[str, Any]]:
    """The eval rows the benchmark scores, through the env: the eval split's rows, then the stratified subset.
    Refuses an ``n_eval`` larger than the eval set (a silently smaller table would be a different experiment)."""
    eval_env = make_env({"id": "AlpacaFarm-v0", "split": "eval", "reference": cfg.reference, "reward": "length",
                         "shuffle": False}, data_dir)
    rows = eval_env.unwrapped.rows
    if cfg.n_eval is not None and cfg.n_eval > len(rows):
        raise ConfigError(f"config {cfg.name!r}: n_eval: {cfg.n_eval} is more than the {len(rows)} eval instructions; "
                          f"use null (or {len(rows)}) for all of them")
    return eval_subset(rows, cfg.n_eval, cfg.subset_seed)


@dataclass
class _Run:
    """One benchmark invocation: its config, run dir and data, the shared stages, the eval rows and the evaluator."""

    cfg: BenchmarkConfig
    run_dir: Path
    data_dir: Any
    progress: bool
    log: Callable[[str], None]
    factories: dict[str, Any]
    rows: list[dict[str, Any]]
    evaluator_kwargs: dict[str, Any]
    evaluator_id: str
    pipeline: Pipeline = field(init=False)
    split: EvalSplit = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = Pipeline(self.cfg, self.run_dir, self.data_dir, self.progress, self.log)
        self.split = EvalSplit.from_config(self.cfg, self.evaluator_kwargs, self.data_dir)

    @property
    def annotator_id(self) -> str:
        """What keys the annotation caches: the evaluator's name and identity."""
        return f"{self.cfg.annotator}@{self.evaluator_id}"


def _run_in(run: _Run, replace_rows: bool) -> dict[str, Any]:
    """Run every method of ``run`` in its (locked) run dir and write the results; returns them (see
    :func:`run_benchmark`)."""
    from . import leaderboard, report

    cfg, run_dir = run.cfg, run.run_dir
    _write_config(run_dir, cfg, replace_rows)
    run.log(f"run dir {run_dir}: {len(run.rows)} eval instructions, methods {', '.join(cfg.methods)}, evaluator "
            f"{cfg.annotator}")
    outputs: dict[str, list[str]] = {}
    this_run: dict[str, dict[str, Any]] = {}
    results = [_run_method(run, method, outputs, this_run) for method in cfg.methods]
    base = cfg.compare_to if cfg.compare_to in outputs else None
    if base is not None:
        _compare_to(run, base, results, outputs)
    out = {
        "run_dir": str(run_dir),
        "preset": cfg.name,
        "policy": cfg.policy,
        "evaluator": cfg.annotator,
        "evaluator_identity": run.evaluator_id,
        "reference": cfg.reference,
        "n_eval": len(run.rows),
        "compare_to": base,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": cfg.to_dict(),
        "stage_seconds": run.pipeline.stage_seconds({{"reward": "reward_model"}.get(k, k) for r in results
                                                     for k in r.settings.get("stages", {})}),
        "methods": [r.to_dict() for r in results],
    }
    out = json_safe(out)  # strict JSON: an undefined SE (n < 2) is null
    atomic_write_text(run_dir / "results.json", json.dumps(out, indent=2, default=str))
    atomic_write_text(run_dir / "results.md", report.markdown_table(out) + "\n")
    atomic_write_text(run_dir / "last_run.json", json.dumps(this_run, indent=2))
    out["chart_path"] = report.bar_chart(out, run_dir / "results.png")
    # the runs root; a forced reuse of the run dir drops the rows of the run it replaced
    out["leaderboard_path"] = str(leaderboard.add_run(run_dir.parent, out, replace_run_dir=replace_rows))
    out["this_run"] = this_run
    return out


def _write_config(run_dir: Path, cfg: BenchmarkConfig, replace_rows: bool) -> None:
    """Write ``config.json``: the resolved config, its methods the union of those run in this run dir (the same
    preset) unless the run replaces the run dir's."""
    config_path = run_dir / "config.json"
    config = cfg.to_dict()
    if config_path.is_file() and not replace_rows:
        try:
            config["methods"] = {**json.loads(config_path.read_text(encoding="utf-8")).get("methods", {}),
                                 **config["methods"]}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            pass
    atomic_write_text(config_path, json.dumps(config, indent=2))


def _run_method(run: _Run, method: str, outputs: dict[str, list[str]], this_run: dict[str, dict[str, Any]]
                ) -> MethodResult:
    """Fit ``method`` (unless its outputs and record are cached), answer and judge the eval rows through the eval
    env, and write its files; returns its result (and fills ``outputs[method]`` and ``this_run[method]``)."""
    from ..metrics import win_rate

    cfg, rows = run.cfg, run.rows
    mdir = run.run_dir / method
    mdir.mkdir(exist_ok=True)
    factory = run.factories[method]
    kwargs, settings, stage_keys, fit_key = _method_key(cfg, run.pipeline, method, factory)
    gen_key = output_key(fit_key, select_of(cfg.methods[method], factory), cfg.n_select)  # + the checkpoint choice
    done = read_generations(mdir / "generations.jsonl")
    keys = [digest([gen_key, r["instruction"], r["input"]])[:32] for r in rows]
    n_cached = sum(k in done for k in keys)
    record_path = mdir / f"record-{gen_key}.json"
    record = read_record(record_path)
    agent = None
    if n_cached < len(rows) or record is None:
        agent, record = _fit_agent(run, method, kwargs, settings, mdir / f"fit-{fit_key}", record)
        atomic_write_text(record_path, json.dumps(record))
    if record["reward"] is not None:
        settings["reward"] = record["reward"]
    t0 = time.time()
    ann, outputs[method], n_generated, n_ann_cached = _generate_and_judge(run, agent, method, keys, done, mdir)
    if n_generated or n_ann_cached < len(rows):  # this invocation generated or annotated: its time counts
        record["seconds"]["generate_and_annotate"] = round(
            record["seconds"]["generate_and_annotate"] + time.time() - t0, 1)
        atomic_write_text(record_path, json.dumps(record))
    this_run[method] = {"n_generated": n_generated, "n_generations_cached": n_cached,
                        "n_annotations_cached": n_ann_cached, "seconds": round(time.time() - t0, 1)}
    outputs_path = mdir / "model_outputs.json"
    out_rows = [{**r, "output": o} for r, o in zip(rows, outputs[method])]
    atomic_write_text(outputs_path, json.dumps(to_alpaca_eval_layout(out_rows, f"{cfg.policy}:{method}"), indent=1,
                                               ensure_ascii=False))
    metrics = win_rate([a["preference"] for a in ann], outputs[method])
    metrics["n_bank_hidden"] = n_hidden = sum(bool(a.get("bank_hidden")) for a in ann)
    if n_hidden:
        run.log(f"{method}: {n_hidden} outputs are GPT-4-labelled answers in the judge's answer bank; they were "
                "hidden from the bank, so their labels were not read back")
    return MethodResult(
        method=method, label=method_label(method, settings, run.pipeline.answers_with_given_policy(factory)),
        reward=settings.get("reward"), metrics=metrics,
        vs_baseline=None, outputs_path=str(outputs_path), annotations_path=str(mdir / "annotations.json"),
        settings={**settings, "stages": stage_keys}, seconds=dict(record["seconds"]),
        preferences=[a["preference"] for a in ann], checkpoint=record.get("checkpoint"),
    )


def _fit_agent(run: _Run, method: str, kwargs: dict[str, Any], settings: dict[str, Any], fit_dir: Path,
               record: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """Build ``method``'s agent, give it the evaluator and the win-rate eval hook (:func:`~..agents.base.attach`),
    fit it on the envs and stages it declares, and make it answer with the checkpoint its ``select`` chooses
    (:func:`~.selection.select_checkpoint`); returns the agent and its record (the reward its ``describe()`` names,
    the fit and selection seconds, the checkpoint chosen), which a rerun that builds no agent reads back."""
    from ..agents import AGENTS
    from ..agents.base import attach

    cfg, factory = run.cfg, run.factories[method]
    start: Any = cfg.policy
    if "policy" not in run.pipeline.wanted(factory, cfg.methods[method]):
        # a method that takes no policy stage (base) starts from the configured policy, with its dtype/device
        from ..models import load_policy

        start = load_policy(cfg.policy, **cfg.policy_kwargs)
    agent = AGENTS.make(cfg.methods[method].get("agent", method), policy=start, **kwargs)
    # step-wise trainers log a win-rate on a few val instructions every eval step (their eval.csv)
    attach(agent, evaluator=cfg.annotator, eval_hook=training_hook(run, RL_EVAL_ROWS))
    t0 = time.time()
    envs = {name: make_env(spec, run.data_dir) for name, spec in getattr(factory, "ENVS", {}).items()}
    # the method's own training dir is keyed like its outputs: another config or stage never reuses it
    stages, _ = run.pipeline.stages_for(factory, method, fit_dir, given=cfg.methods[method])
    if not run.pipeline.is_given(factory):  # a given stage (stages.sft: null) answers with the given policy as is
        agent.fit(envs, **stages)
    seconds = {"fit": round(time.time() - t0, 1)}
    t0 = time.time()
    checkpoint = select_checkpoint(run, method, agent, fit_dir)  # before any eval row is answered
    if checkpoint is not None:
        seconds["select"] = round(time.time() - t0, 1)
    reward = agent.describe().get("reward") or (str(settings["reward"]) if "reward" in settings else None)
    spent = record["seconds"].get("generate_and_annotate", 0.0) if record else 0.0  # before a resume
    return agent, {"reward": reward, "seconds": {**seconds, "generate_and_annotate": spent}, "checkpoint": checkpoint}


def _compare_to(run: _Run, base: str, results: list[MethodResult], outputs: dict[str, list[str]]) -> None:
    """Each other method's win-rate against method ``base``'s outputs (``base`` is ``output_1``), judged by the
    evaluator and cached in ``<method>/annotations_vs_<base>.json``; set as the results' ``vs_baseline``. Also each
    one's paired difference of win-rates vs Davinci003 with ``base``'s on the same instructions (``paired``)."""
    from ..annotators import make_annotator
    from ..context import RewardContext
    from ..metrics import paired_difference, win_rate
    from .report import paired_entry

    cfg = run.cfg
    # built on first use: a resumed run with every annotation cached never loads it
    evaluator = LazyAnnotator(lambda: make_annotator(cfg.annotator, context=RewardContext.of(run.data_dir),
                                                     **run.evaluator_kwargs))
    base_prefs = next(r.preferences for r in results if r.method == base)
    for res in results:
        if res.method == base:
            continue
        pairs = [{"instruction": r["instruction"], "input": r["input"], "dataset": r["dataset"],
                  "output_1": b, "generator_1": f"{cfg.policy}:{base}", "output_2": o,
                  "generator_2": f"{cfg.policy}:{res.method}"}
                 for r, b, o in zip(run.rows, outputs[base], outputs[res.method])]
        ann, _ = annotate_pairs(evaluator, pairs, cache_path=run.run_dir / res.method / f"annotations_vs_{base}.json",
                                annotator_id=run.annotator_id, seed=cfg.annotator_seed, progress=run.progress,
                                desc=f"annotate ({res.method} vs {base})")
        res.vs_baseline = {"baseline": base, **win_rate([a["preference"] for a in ann], outputs[res.method])}
        # beside the head-to-head: the paired difference of the two methods' win-rates vs Davinci003, per instruction
        res.paired = paired_entry(base, paired_difference(res.preferences, base_prefs))


def _method_key(cfg: BenchmarkConfig, pipeline: Pipeline, method: str, factory: Any
                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], str]:
    """(agent kwargs, settings, stage keys, generation key) of a method: the key of its cached outputs and record."""
    kwargs = _agent_kwargs(cfg, pipeline, method, factory)
    settings = untracked({"policy": cfg.policy, **kwargs})  # report_to keys nothing and is no result setting
    stage_keys = _stage_keys(pipeline, factory, cfg.methods[method])
    gen_key = digest({"method": method, "agent": cfg.methods[method].get("agent", method), **settings,
                      "stages": stage_keys})[:16]
    return kwargs, settings, stage_keys, gen_key


def describe_plan(cfg: BenchmarkConfig, run_dir: str | os.PathLike | None = None, data_dir: Any = None,
                  force: bool = False) -> str:
    """What :func:`run_benchmark` would do, after the same checks, without doing any of it: the run dir, the eval
    instructions, each shared stage (built or reused) and each method (its settings and cached outputs)."""
    from ..agents import AGENTS
    from ..annotators import annotator_identity
    from ..context import RewardContext

    cfg.validate(f"config {cfg.name!r}")
    if cfg.policy is None:
        raise ConfigError(f"preset {cfg.name!r} needs a policy: pass --policy (e.g. the path of your SFT10k model)")
    evaluator_id = annotator_identity(cfg.annotator, context=RewardContext.of(data_dir), **cfg.annotator_kwargs)
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg, evaluator_id)
    check_run_dir_owner(run_dir, cfg, force)
    rows = eval_instructions(cfg, data_dir)
    pipeline = Pipeline(cfg, run_dir, data_dir, progress=False, log=lambda m: None)
    g = cfg.generation
    lines = [f"run dir     {run_dir}{' (exists: resumes)' if (run_dir / 'config.json').is_file() else ' (new)'}",
             f"policy      {cfg.policy}",
             f"eval        {len(rows)} instructions, reference {cfg.reference}, evaluator {cfg.annotator}",
             f"generation  {g.max_new_tokens} new tokens, temperature {g.temperature}, top_p {g.top_p}, "
             f"batch {g.batch_size}"]
    factories = {m: AGENTS.resolve(cfg.methods[m].get("agent", m)) for m in cfg.methods}
    wanted = {s for m, f in factories.items() for s in pipeline.wanted(f, cfg.methods[m])}
    for name, folder, built, fields in pipeline.plan(wanted):
        lines.append(f"stage       {name:<26} {'reuse' if built else 'build'}  {folder.name}  {fields or '(defaults)'}")
    for method, factory in factories.items():
        _, settings, _, gen_key = _method_key(cfg, pipeline, method, factory)
        gen_key = output_key(gen_key, select_of(cfg.methods[method], factory), cfg.n_select)
        cached = read_generations(run_dir / method / "generations.jsonl")
        n = sum(digest([gen_key, r["instruction"], r["input"]])[:32] in cached for r in rows)
        given = {k: v for k, v in cfg.methods[method].items()}
        lines.append(f"method      {method:<26} {n}/{len(rows)} outputs cached  {given or '(defaults)'}")
    return "\n".join(lines)


def _stage_keys(pipeline: Pipeline, factory: Any, given: dict[str, Any]) -> dict[str, str]:
    """The keys of the stages a method's outputs depend on (computed without building them)."""
    wanted = pipeline.wanted(factory, given)
    keys: dict[str, str] = {}
    if "policy" in wanted or "output_dir" in wanted:
        keys["sft"] = pipeline.sft_key()
    for stage, key_fn in (("preferences", "preferences_key"), ("reward", "reward_model_key")):
        if stage in wanted:
            keys[stage] = getattr(pipeline, key_fn)()
    return keys


def _generate_and_judge(run: _Run, agent: Any, method: str, keys: list[str], done: dict[str, str], mdir: Path
                        ) -> tuple[list[dict[str, Any]], list[str], int, int]:
    """Answer the eval rows with ``agent`` and judge the answers through the eval-split env whose reward is the
    evaluator (:class:`~.scoring.EvalEnv`): per batch, ``reset`` -> ``agent.respond`` -> ``step`` (ONE batched
    annotation call). Generations are cached per batch (``generations.jsonl``, keyed by ``keys``: a killed run keeps
    every finished batch) and annotations per pair (``annotations.json``, keyed by the evaluator's identity), so a
    rerun regenerates and re-annotates nothing it has. Returns (annotation rows, outputs, n generated, n annotations
    from the cache)."""
    from tqdm.auto import tqdm

    cfg, rows = run.cfg, run.rows
    cache = AnnotationCache(mdir / "annotations.json", run.annotator_id, cfg.annotator_seed)
    pairs = [{"instruction": r["instruction"], "input": r["input"], "dataset": r.get("dataset", ""),
              "output_1": r["reference_output"], "generator_1": REFERENCE_NAME} for r in rows]
    ann = [cache.get({**p, "output_2": done[k]}) if k in done else None for p, k in zip(pairs, keys)]
    n_ann_cached = sum(a is not None for a in ann)
    todo = [i for i, a in enumerate(ann) if a is None]
    bs = max(1, int(cfg.generation.batch_size))
    n_generated = 0
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc=f"generate+annotate ({method})", unit="instr",
               disable=not run.progress)
    with open(mdir / "generations.jsonl", "a", encoding="utf-8") as f:
        for start in range(0, len(todo), bs):
            idx = todo[start : start + bs]
            env = run.split.env([rows[i] for i in idx])
            observations = env.reset()
            missing = [j for j, i in enumerate(idx) if keys[i] not in done]
            if missing:
                texts = check_responses(agent.respond([observations[j] for j in missing]), method,
                                        [rows[idx[j]] for j in missing])
                append_generations(f, [(keys[idx[j]], rows[idx[j]], t) for j, t in zip(missing, texts)], done)
                n_generated += len(missing)
            responses = [done[keys[i]] for i in idx]
            for i, response, a in zip(idx, responses, env.judge(responses)):  # the evaluator's ONE batched call
                pair = {**pairs[i], "output_2": response, "generator_2": f"{cfg.policy}:{method}"}
                ann[i] = {**pair, **a, "key": cache.key(pair)}
            env.close()
            cache.write([a for a in ann if a is not None])
            bar.update(len(idx))
    bar.close()
    if not todo:
        cache.write([a for a in ann if a is not None])
    return [a for a in ann if a is not None], [done[k] for k in keys], n_generated, n_ann_cached
