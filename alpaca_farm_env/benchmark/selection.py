"""Checkpoint selection without the test set: which policy of a method that keeps checkpoints the benchmark evaluates.

A method's ``select`` setting (``methods.<m>.select`` in a preset; read by the benchmark, never passed to the agent):

* ``val`` (the default of methods that keep checkpoints: PPO, Quark): the method keeps its policy at each save
  (``keep_checkpoints``, ``output_dir/checkpoints/step_<k>``); after training, each kept policy answers ``n_select``
  instructions of AlpacaFarm's ``val`` split, through ``AlpacaFarm-v0`` on ``split="val"`` (:class:`~.scoring.EvalEnv`
  over val rows), and the benchmark's evaluator *without label noise* (``pooled`` for ``noisy_pooled``) judges each
  answer against the split's reference output: a win-rate and its standard error per step (``metrics.win_rate``).
  The step with the highest win-rate is evaluated (ties: the earliest). The eval split is never read while selecting.
* ``last``: the policy at the end of training (the default of every other method).
* ``step:<k>``: the policy kept at step ``k``, one of the steps the method's config saves at (checked before any
  compute).

This is stricter than the paper: Table 2's PPO is the step-20 checkpoint chosen with the simulated evaluator on the
evaluation set itself (tatsu-lab/alpaca_farm issue #60); here the 805 evaluation instructions never take part in the
choice. Each step's val answers and judgments are cached in the method's fit dir (``selection/step_<k>-<key>.json``)
and the choice in the method's record, so a rerun reports the same choice without generating again; the curve is
plotted beside the results (``<method>/selection.png``).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from ..tracking import untracked
from ..utils import atomic_write_text, digest
from .config import eval_subset
from .pipeline import make_env
from .scoring import EvalScorer, EvalSplit, check_responses, win_rate_hook

__all__ = ["NOISE_FREE", "Select", "check_n_select", "check_select", "keeps_checkpoints", "noise_free",
           "output_key", "parse_select", "select_checkpoint", "select_of", "selection_caption", "val_rows",
           "training_hook", "val_split", "with_kept_checkpoints"]

NOISE_FREE = {"noisy_pooled": "pooled", "alpaca_farm_pool_noisy": "alpaca_farm_pool"}
"""Each noisy annotator's noise-free twin (the same judges without ``p_label_flip``)."""

CHOICES = "val, last or step:<k>"


@dataclass(frozen=True)
class Select:
    """A parsed ``select`` value: ``by`` is ``"val"``, ``"last"`` or ``"step"`` (then ``step`` is k)."""

    by: str
    step: int | None = None

    def __str__(self) -> str:
        return f"step:{self.step}" if self.by == "step" else self.by

    @property
    def needs_checkpoints(self) -> bool:
        """Whether the method must keep its policy at each save (``val`` and ``step:<k>``)."""
        return self.by != "last"


def parse_select(value: Any, where: str = "select", source: str = "<config>") -> Select:
    """Returns the :class:`Select` of ``value`` (``"val"``, ``"last"``, ``"step:<k>"`` with k >= 1); raises a one-line
    :class:`ConfigError` naming ``source`` and ``where`` for anything else."""
    text = value.strip() if isinstance(value, str) else None
    if text in ("val", "last"):
        return Select(text)
    if text is not None and text.startswith("step:") and text[5:].strip().isdigit() and int(text[5:]) >= 1:
        return Select("step", int(text[5:]))
    raise ConfigError(f"{source}: {where}: unknown value {value!r}; choose {CHOICES} (k: a step the method saves at)")


def keeps_checkpoints(factory: Any) -> bool:
    """Whether an agent class can keep its policy at each save (an RL method: ``checkpoint_schedule``)."""
    return callable(getattr(factory, "checkpoint_schedule", None))


def select_of(given: Mapping[str, Any], factory: Any) -> Select:
    """Returns a method's :class:`Select`: its ``select`` setting, else ``val`` for a method that keeps checkpoints
    and ``last`` for any other."""
    return parse_select(given.get("select", "val" if keeps_checkpoints(factory) else "last"))


def check_select(method: str, given: Mapping[str, Any], factory: Any, source: str) -> None:
    """Check ``methods.<method>.select`` before any compute: a known value; ``val`` and ``step:<k>`` only for a
    method that keeps checkpoints, with ``keep_checkpoints`` not turned off; ``k`` one of the steps the method's
    config saves at. Raises a one-line :class:`ConfigError`; returns None."""
    where = f"methods.{method}.select"
    sel = parse_select(given.get("select", "val" if keeps_checkpoints(factory) else "last"), where, source)
    if not sel.needs_checkpoints:
        return
    if not keeps_checkpoints(factory):
        raise ConfigError(f"{source}: {where}: {sel}: method {method!r} keeps no checkpoints to choose from; use last")
    config = given.get("config")
    fields = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {})
    if fields.get("keep_checkpoints") is False:
        raise ConfigError(f"{source}: {where}: {sel} needs the checkpoints that config.keep_checkpoints: false drops")
    steps = factory.checkpoint_schedule(fields)
    if sel.by == "step" and sel.step not in steps:
        cfg = factory.CONFIG_CLASS(**fields)
        raise ConfigError(f"{source}: {where}: {sel}: {method} keeps checkpoints at steps {_steps_text(steps)} "
                          f"(save_steps {cfg.save_steps}, total_steps {cfg.total_steps}); choose one of them")


def _steps_text(steps: Sequence[int]) -> str:
    return str(list(steps)) if len(steps) <= 8 else f"[{steps[0]}, {steps[1]}, ..., {steps[-1]}]"


def with_kept_checkpoints(kwargs: dict[str, Any], sel: Select) -> dict[str, Any]:
    """Returns an agent's constructor keywords with ``config.keep_checkpoints`` on when ``sel`` needs checkpoints
    (``kwargs`` unchanged otherwise, so that the outputs and fit dirs of ``last`` keep their keys)."""
    if not sel.needs_checkpoints:
        return kwargs
    config = kwargs.get("config")
    if dataclasses.is_dataclass(config):
        return {**kwargs, "config": dataclasses.replace(config, keep_checkpoints=True)}
    return {**kwargs, "config": {**dict(config or {}), "keep_checkpoints": True}}


def output_key(fit_key: str, sel: Select, n_select: int | None) -> str:
    """Returns the key of a method's outputs and record: ``fit_key`` (what its training depends on) for ``last``, else
    that key with the selection (and, for ``val``, ``n_select``) digested in. The fit dir keeps ``fit_key``: another
    ``select`` reuses the training and its kept checkpoints."""
    if not sel.needs_checkpoints:
        return fit_key
    return digest([fit_key, str(sel), n_select if sel.by == "val" else None])[:16]


def noise_free(annotator: str, kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Returns ``(name, kwargs)`` of ``annotator`` without label noise: the noise-free twin of a noisy pool
    (:data:`NOISE_FREE`), and ``p_label_flip`` cleared where the kwargs set it."""
    out = dict(kwargs)
    if "p_label_flip" in out:
        out["p_label_flip"] = None
    return NOISE_FREE.get(annotator, annotator), out


def val_rows(cfg: Any, data_dir: Any) -> list[dict[str, Any]]:
    """The val instructions a selection judges: the rows of ``AlpacaFarm-v0`` on ``split="val"`` (instruction, input,
    reference output, row index), ``cfg.n_select`` of them chosen as the eval subset is (stratified, seeded by
    ``cfg.subset_seed``; None: all). Raises :class:`ConfigError` when ``n_select`` is more than the split has."""
    env = make_env({"id": "AlpacaFarm-v0", "split": "val", "reward": "length", "shuffle": False}, data_dir)
    rows = env.unwrapped.rows
    env.close()
    if cfg.n_select is not None and cfg.n_select > len(rows):
        raise ConfigError(f"config {cfg.name!r}: n_select: {cfg.n_select} is more than the {len(rows)} val "
                          f"instructions; use null (or {len(rows)}) for all of them")
    return eval_subset(rows, cfg.n_select, cfg.subset_seed)


def check_n_select(cfg: Any, factories: Mapping[str, Any], data_dir: Any) -> None:
    """Before any compute: when a method selects by ``val``, the val split has ``n_select`` instructions."""
    if any(select_of(cfg.methods[m], f).by == "val" for m, f in factories.items()):
        val_rows(cfg, data_dir)


def val_split(run: Any) -> tuple[str, EvalSplit]:
    """The ``val`` split judged by the noise-free twin of the benchmark's evaluator: returns ``(name, split)``."""
    name, kwargs = noise_free(run.cfg.annotator, run.evaluator_kwargs)
    return name, EvalSplit(run.cfg.reference, run.data_dir,
                           {"annotator": name, **kwargs, "seed": run.cfg.annotator_seed}, split="val")


def training_hook(run: Any, n_rows: int) -> Any:
    """The ``eval_hook`` a step-wise trainer calls every eval step (its ``eval.csv``): the first ``n_rows`` val
    instructions of the selection, judged as the selection judges them. A trend to watch while training; the test
    set is not read."""
    hook: list[Any] = []  # built at the first call: an agent without eval steps never loads the split

    def call(agent: Any) -> dict[str, Any]:
        if not hook:
            rows = val_rows(run.cfg, run.data_dir)[:n_rows]
            hook.append(win_rate_hook(EvalScorer(val_split(run)[1], rows)))
        return hook[0](agent)

    return call


# ---------------------------------------------------------------------------------------------------- selecting
def select_checkpoint(run: Any, method: str, agent: Any, fit_dir: Path) -> dict[str, Any] | None:
    """After ``agent``'s fit: choose the policy of ``method`` to evaluate by its ``select`` setting and make the agent
    answer with it (``agent.policy``). ``run``: the benchmark invocation (``cfg``, ``data_dir``, ``factories``,
    ``evaluator_kwargs``, ``evaluator_id``, ``run_dir``, ``progress``, ``log``).

    Returns ``{"selected_step", "selected_by", "curve"}`` (``curve``: ``{"step", "win_rate", "standard_error"}`` per
    kept step for ``val``, else []; ``val`` adds ``n_select`` and ``evaluator``), or None for a method without
    checkpoints."""
    sel = select_of(run.cfg.methods[method], run.factories[method])
    if not callable(getattr(agent, "checkpoint_policy", None)):
        return None
    if sel.by == "last":
        return {"selected_step": int(agent.summary.get("steps") or len(agent.history)), "selected_by": "last",
                "curve": []}
    kept = agent.checkpoint_steps()
    if sel.by == "step":
        if sel.step not in kept:
            raise ConfigError(f"methods.{method}.select: {sel}: {method} kept no checkpoint at step {sel.step} in "
                              f"{fit_dir} (kept steps: {kept})")
        agent.policy = agent.checkpoint_policy(sel.step)
        return {"selected_step": sel.step, "selected_by": "step", "curve": []}
    if not kept:
        raise RuntimeError(f"{method} kept no checkpoints in {fit_dir} to select from")
    rows = val_rows(run.cfg, run.data_dir)
    name, split = val_split(run)
    bs = max(1, int(run.cfg.generation.batch_size))
    key = digest({"evaluator": split.evaluator, "identity": run.evaluator_id, "batch_size": bs,
                  "rows": [[r["row_index"], r["instruction"], r["input"]] for r in rows],
                  "agent": untracked(agent.describe())})[:16]
    curve = [_val_point(split, rows, agent, method, step, bs, Path(fit_dir) / "selection" / f"step_{step}-{key}.json")
             for step in _progress(kept, method, run.progress)]
    best = max(curve, key=lambda p: (_score(p["win_rate"]), -p["step"]))  # ties: the earliest step
    agent.policy = agent.checkpoint_policy(best["step"])
    run.log(f"{method}: val win-rate by kept step ({name}, {len(rows)} val instructions): "
            + ", ".join(f"{p['step']}: {p['win_rate']:.1f}" for p in curve) + f"; selected step {best['step']}")
    curve_chart(curve, best["step"], run.run_dir / method / "selection.png",
                f"{method}: val win-rate vs Davinci003 by step ({name}, n={len(rows)})")
    return {"selected_step": best["step"], "selected_by": "val", "curve": curve, "n_select": len(rows),
            "evaluator": name}


def _score(win_rate: Any) -> float:
    return float(win_rate) if win_rate is not None and not math.isnan(float(win_rate)) else -math.inf


def _progress(steps: list[int], method: str, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(steps, desc=f"select ({method}, val)", unit="checkpoint", disable=not show)


def _val_point(split: EvalSplit, rows: list[dict[str, Any]], agent: Any, method: str, step: int, bs: int,
               path: Path) -> dict[str, Any]:
    """The val win-rate of the policy kept at ``step``: its answers to ``rows`` (batches of ``bs``, as the benchmark
    answers the eval rows), judged by ``split``'s evaluator in one batched env step. Read back from ``path`` when
    cached there; otherwise the answers are cached first (``path`` + ``.outputs``), then the point with them. Returns
    ``{"step", "win_rate", "standard_error"}``."""
    from ..metrics import win_rate

    cached = _read_json(path)
    if cached is not None:
        return {k: cached[k] for k in ("step", "win_rate", "standard_error")}
    answers_path = path.with_name(path.name + ".outputs")
    responses = _read_json(answers_path)
    env = split.env(rows)
    observations = env.reset()
    if not (isinstance(responses, list) and len(responses) == len(rows)):
        agent.policy = agent.checkpoint_policy(step)
        responses = []
        for i in range(0, len(rows), bs):
            responses += check_responses(agent.respond(observations[i: i + bs]), method, rows[i: i + bs], "val")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(answers_path, json.dumps(responses, ensure_ascii=False))
    annotations = env.judge(responses)
    env.close()
    wr = win_rate([a["preference"] for a in annotations], responses)
    point = {"step": step, "win_rate": wr["win_rate"], "standard_error": wr["standard_error"]}
    atomic_write_text(path, json.dumps({**point, "n": wr["n_total"], "instructions": [r["instruction"] for r in rows],
                                        "outputs": responses, "preferences": [a["preference"] for a in annotations]},
                                       ensure_ascii=False))
    answers_path.unlink(missing_ok=True)
    return point


def _read_json(path: Path) -> Any:
    """The JSON in ``path``; None when it is missing or unreadable (a torn write is redone)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------------------------------- reporting
def curve_chart(curve: Sequence[Mapping[str, Any]], selected: int, path: str | Path, title: str = "") -> str:
    """PNG of a selection curve: val win-rate (with standard-error bars) by kept step, the selected step marked.
    Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["step"] for p in curve]
    ys = [p["win_rate"] if p["win_rate"] is not None else float("nan") for p in curve]
    es = [p["standard_error"] if p["standard_error"] is not None and not math.isnan(p["standard_error"]) else 0.0
          for p in curve]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.errorbar(xs, ys, yerr=es, fmt="o-", capsize=3, label="val win-rate")
    ax.axvline(selected, color="grey", ls="--", lw=0.8, label=f"selected: step {selected}")
    if len(xs) <= 12:
        ax.set_xticks(xs)
    ax.set_xlabel("RL step")
    ax.set_ylabel("win-rate vs Davinci003 (%)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def selection_caption(results: Mapping[str, Any]) -> str:
    """The line under the results table that says which checkpoint each method was evaluated at ("" when no method
    keeps checkpoints), e.g. ``ppo: step 20 of [20, 40, ..., 390] by val win-rate (41.2 ± 1.1; pooled, 2000 val
    instructions)`` or ``quark: step 390 (select: last)``."""
    parts = []
    for m in results.get("methods", []):
        ck = m.get("checkpoint")
        if not ck:
            continue
        if ck["selected_by"] == "val":
            best = next(p for p in ck["curve"] if p["step"] == ck["selected_step"])
            steps = [p["step"] for p in ck["curve"]]
            se = best["standard_error"]
            wr = "—" if best["win_rate"] is None else f"{best['win_rate']:.1f}" + (
                f" ± {se:.1f}" if se is not None and not math.isnan(se) else "")
            parts.append(f"{m['method']}: step {ck['selected_step']} of {_steps_text(steps)} by val win-rate "
                         f"({wr}; {ck.get('evaluator')}, {ck.get('n_select')} val instructions)")
        else:
            given = "last" if ck["selected_by"] == "last" else f"step:{ck['selected_step']}"
            parts.append(f"{m['method']}: step {ck['selected_step']} (select: {given})")
    return ("evaluated checkpoints: " + "; ".join(parts)) if parts else ""
