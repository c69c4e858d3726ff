"""``RLTrainer``: the loop around an RL method's step, written once.

An RL method (:class:`~alpaca_farm_env.rl.method.RLMethod`) says what one step does; the trainer it holds does the rest:

1. the prompts: the env's rows that fit ``query_len``, the last ``n_eval_prompts`` held out for the periodic eval,
   the rest sharded over processes (``rows[rank::world]``); each process steps its own vector env over its shard
   (``AlpacaFarmVectorEnv.from_env``), whose reward is the one the method learns from: one reward call per env step;
2. the models: ``method.build(policy, reward_backend)`` returns the module to train; the trainer makes AdamW and the
   linear schedule over its trainable parameters and prepares both with Accelerate (DDP / FSDP / DeepSpeed by
   ``accelerate launch``);
3. per step: ``method.step(k)`` (rollouts, losses, updates: the algorithm), the schedule stepped once, a row in
   ``metrics.csv`` (and, with ``report_to``, in TensorBoard or Weights & Biases through Accelerate's trackers:
   :func:`~alpaca_farm_env.tracking.tracked`), a checkpoint every ``save_steps`` (atomic: ``checkpoint.tmp``
   renamed), a periodic eval every ``eval_steps`` (mean reward on the held-out prompts, sample responses, and the
   agent's ``eval_hook``);
4. at the end: the trained policy saved to ``output_dir/model`` and ``summary.json``. A rerun resumes from the last
   checkpoint; a finished ``output_dir`` is loaded, not retrained; one from another run (config, reward, policy,
   number of prompts or processes: the run key) is refused.

The resume state (``output_dir/checkpoint``: model, optimizer, schedule, RNG) is overwritten at each save and deleted at
the end. With ``keep_checkpoints``, each save also keeps the policy of that step in ``output_dir/checkpoints/step_<k>``
(the LoRA adapter only in lean mode, the full weights otherwise), kept after training, each holding the run key: the
checkpoints a selection of the best step chooses from (:meth:`RLTrainer.kept_steps`, :meth:`RLTrainer.load_kept`).

During a step the method calls the trainer's helpers: :meth:`RLTrainer.rollouts` (this process's rollouts of the step),
:meth:`~RLTrainer.minibatches`, :meth:`~RLTrainer.accumulate` (one optimizer step over micro-batches),
:meth:`~RLTrainer.all_reduce` and :meth:`~RLTrainer.global_mean` (statistics over processes).

Reference (tatsu-lab/alpaca_farm): ``src/alpaca_farm/rl/rl_trainer.py`` (``train``, ``step``, ``evaluate``,
``create_optimizer_and_scheduler``, ``save_model``).
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping, Sequence

import torch

from ..csvlog import CSVLogger
from ..envs.vector_env import AlpacaFarmVectorEnv
from ..tracking import tracked
from ..utils import atomic_write_text, digest, stable_hash
from .rollout import collect_rollouts, env_episode, env_rows, epoch_order, positions_for_step, query_fits

Tensor = torch.Tensor

__all__ = ["KEPT_DIR", "RLTrainer", "make_optimizer", "run_key", "saved_steps"]

KEPT_DIR = "checkpoints"
"""The folder (in ``output_dir``) of the policies kept at each save (``step_<k>``), apart from the resume state."""


def make_optimizer(params: Sequence[torch.nn.Parameter], cfg: Any) -> tuple[Any, Any]:
    """Returns ``(AdamW, the linear schedule)``: AdamW with the config's learning rate, eps and weight decay, and the
    linear schedule with ``warmup_steps``, stepped once per RL step over ``total_steps`` (reference ``rl_trainer.
    create_optimizer_and_scheduler``, the HF ``linear`` default)."""
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.AdamW(list(params), lr=cfg.learning_rate, eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, cfg.warmup_steps, max(1, cfg.total_steps))
    return opt, sched


def saved_steps(config: Any) -> list[int]:
    """Returns the steps at which a run of ``config`` saves (and, with ``keep_checkpoints``, keeps its policy): every
    ``save_steps``-th step and the last one, ``total_steps``."""
    total, every = int(config.total_steps), max(1, int(config.save_steps))
    return sorted(set(range(every, total + 1, every)) | ({total} if total > 0 else set()))


def run_key(method: str, config: Any, reward: Any, reward_kwargs: Mapping[str, Any], policy: str, n_prompts: int,
            world: int) -> str:
    """Returns the 16-hex-digit key of what a run's results depend on: the method, every config field but
    ``stop_after`` (which only says where one call stops), ``report_to`` (where metrics are also logged) and
    ``keep_checkpoints`` when it is off (so that run dirs written before the field existed keep their key), the
    reward, the start policy's name, the number of prompts and of processes. The digest sorts keys, so the order of
    the config's fields does not enter it. A run that keeps its checkpoints has another key: it keeps them from its
    first step."""
    fields = {k: v for k, v in asdict(config).items()
              if k not in ("stop_after", "report_to") and not (k == "keep_checkpoints" and not v)}
    return digest({"agent": method, "config": fields, "reward": [str(reward), dict(reward_kwargs)], "policy": policy,
                   "prompts": n_prompts, "world": world})[:16]


class RLTrainer:
    """The loop of one ``fit`` of an RL method (see the module docstring). ``method``: the agent (an
    :class:`~alpaca_farm_env.rl.method.RLMethod`; its ``name``, ``config``, hooks, ``eval_hook`` and answer settings
    ``temperature``, ``top_p``, ``batch_size``, ``seed``, ``progress`` are read); ``accelerator``: an
    ``accelerate.Accelerator`` (made on the first fit when None).

    After :meth:`fit`: ``module`` (the prepared trained module), ``optimizer``, ``scheduler``, ``env`` (this process's
    rollout env), ``eval_env``, ``history`` (one dict per step), ``summary``, ``reward_name``, ``key``, ``start``
    (the start policy), ``output_dir``.
    """

    def __init__(self, method: Any, accelerator: Any = None):
        self.method, self.config = method, method.config
        self.accelerator = accelerator
        self.module: Any = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.env: Any = None
        self.eval_env: Any = None
        self.history: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self.reward_name = ""
        self.key = ""
        self.start: Any = None
        self.output_dir: Path | None = None
        self.track: Callable[[Mapping[str, Any], int], None] = lambda values, step: None  # tracking.tracked's, in fit

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def unwrapped(self) -> Any:
        """The trained module without its Accelerate wrapper (DDP / FSDP)."""
        return self.accelerator.unwrap_model(self.module)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self, env: Any, policy: Any, reward: Any, reward_kwargs: Mapping[str, Any],
            output_dir: str | os.PathLike) -> Any:
        """Train ``policy`` on the prompts of ``env`` against the reward ``(reward, reward_kwargs)`` (already chosen
        and checked by the method), in ``output_dir``. Returns the trained Policy (loaded when ``output_dir`` holds a
        finished run), or None when the run stopped early at ``config.stop_after``."""
        cfg = self.config
        if self.accelerator is None:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.output_dir, self.start = out, policy
        n_prompts = self._setup_envs(env, policy.tokenizer, reward, reward_kwargs)
        backend = self.env.reward_backend  # the backend the rollouts are scored with (PPO may share its trunk)
        self.reward_name = str(getattr(backend, "name", reward))
        self.key = run_key(self.method.name, cfg, reward, reward_kwargs, getattr(policy, "name", ""), n_prompts,
                           self.accelerator.num_processes)
        finished = self._finished(out, policy)
        if finished is not None:
            return finished
        torch.manual_seed(cfg.seed)
        self._build(policy, backend)
        step = self._start_log(out)
        with tracked(cfg.report_to, out, self.method.name, config=asdict(cfg), step=step,
                     accelerator=self.accelerator) as self.track:
            last = self._loop(step, out)
        return None if last is None else self._finish(out, last)

    def _setup_envs(self, env: Any, tokenizer: Any, reward: Any, reward_kwargs: Mapping[str, Any]) -> int:
        """This process's rollout env over its shard of the prompts that fit ``query_len`` and the eval env over the
        held-out ones; sets ``env``, ``eval_env``, ``n_shard``, ``per_process`` and ``chunk``. Returns the number of
        prompts that fit."""
        cfg, acc = self.config, self.accelerator
        rank, world = acc.process_index, acc.num_processes
        rows = [r for r in env_rows(env) if query_fits(tokenizer, r["prompt"], cfg.query_len)]
        n_eval = min(cfg.n_eval_prompts, max(0, len(rows) - world))
        eval_rows, train_rows = rows[len(rows) - n_eval:] if n_eval else [], rows[: len(rows) - n_eval]
        shard = train_rows[rank::world]
        if cfg.rollout_batch_size % world or cfg.step_batch_size % world:
            raise ValueError(f"rollout_batch_size {cfg.rollout_batch_size} and step_batch_size {cfg.step_batch_size} "
                             f"must be multiples of the number of processes ({world})")
        if not shard:
            raise ValueError(f"no prompt of envs['unlabeled'] fits query_len={cfg.query_len} tokens")
        self.per_process = cfg.rollout_batch_size // world
        self.chunk = max(1, min(cfg.rollout_per_device_batch_size, self.per_process))
        kwargs = dict(reward_kwargs)
        # the given env's rows with the reward in force (the stage's reward model): one batched reward call a step
        self.env = AlpacaFarmVectorEnv.from_env(env, shard, self.chunk, reward=reward, reward_kwargs=kwargs,
                                                seed=stable_hash(cfg.seed, rank))
        self.eval_env = (AlpacaFarmVectorEnv.from_env(env, eval_rows, len(eval_rows), reward=reward,
                                                      reward_kwargs=kwargs, seed=cfg.seed) if eval_rows else None)
        self.n_shard = len(shard)
        return len(rows)

    def _finished(self, out: Path, start: Any) -> Any:
        """The trained Policy when ``out`` holds the finished run of this key (None when it holds none); another
        run's ``summary.json`` is refused."""
        summary_path = out / "summary.json"
        if not summary_path.is_file():
            return None
        done = json.loads(summary_path.read_text())
        if done.get("key") != self.key:
            raise ValueError(f"{out} holds a {self.method.name} run with another config, reward, policy or process "
                             f"count (key {done.get('key')} != {self.key}); use a fresh output_dir")
        if not (out / "model").is_dir():
            return None
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(out / "model"), dtype=start.model.dtype).to(start.device)
        self.summary = done
        return type(start)(model.eval(), start.tokenizer, name=f"{start.name}:{self.method.name}")

    def _build(self, start: Any, backend: Any) -> None:
        """The method's module, AdamW over its trainable parameters and the schedule, prepared by Accelerate (the
        schedule registered for checkpointing)."""
        acc = self.accelerator
        module = self.method.build(start, backend)
        opt, self.scheduler = make_optimizer([p for p in module.parameters() if p.requires_grad], self.config)
        self.module, self.optimizer = acc.prepare(module, opt)
        acc.register_for_checkpointing(self.scheduler)

    def _start_log(self, out: Path) -> int:
        """Resume from ``out/checkpoint`` if there is one (kept policies of another run refused); open
        ``metrics.csv`` (rows after the checkpoint dropped) and read the history back. Returns the step to start
        from."""
        acc = self.accelerator
        self.csv = CSVLogger(out / "metrics.csv", ["step", *self.method.CSV_FIELDS, "seconds"])
        step = self._resume(out / "checkpoint")
        self.kept_steps()  # never mix another run's kept policies with this one's
        if acc.is_main_process:
            self.csv.resume(step)
        acc.wait_for_everyone()
        self.history[:] = [{k: _f(v) for k, v in r.items()} for r in self.csv.read() if int(r["step"]) <= step]
        return step

    def _loop(self, step: int, out: Path) -> int | None:
        """Steps from ``step`` to ``total_steps``: the method's step, the schedule, the CSV row, checkpoints, evals.
        Returns the last step, or None when the run stopped early at ``stop_after`` (checkpointed, unfinished)."""
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        bar = tqdm(total=cfg.total_steps, initial=step, desc=self.method.name, unit="step",
                   disable=not (getattr(self.method, "progress", False) and acc.is_main_process))
        try:
            while step < cfg.total_steps:
                t0 = time.time()
                stats = self.method.step(step)
                lr = self.scheduler.get_last_lr()[0]
                self.scheduler.step()  # once per RL step (rl_trainer.step)
                step += 1
                stats = {"step": step, **stats, "lr": lr, "seconds": time.time() - t0}
                if acc.is_main_process:
                    self.csv.log(stats)
                self.track(stats, step)
                self.history.append(stats)
                bar.update(1)
                bar.set_postfix(reward=f"{stats.get('reward_mean', float('nan')):.3f}")
                if step % cfg.save_steps == 0 or step == cfg.total_steps:
                    if cfg.keep_checkpoints:  # first: a kill between the two resumes before this step, re-keeping it
                        self._keep_policy(out / KEPT_DIR, step)
                    self._checkpoint(out / "checkpoint", step)
                if cfg.eval_steps and step % cfg.eval_steps == 0:
                    self._eval(step)
                if cfg.stop_after is not None and cfg.stop_after <= step < cfg.total_steps:
                    return None  # a deliberate stop (tests of resume): the checkpoint is there, no final model yet
        finally:
            bar.close()
        return step

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _checkpoint(self, folder: Path, step: int) -> None:
        """``accelerator.save_state`` (the prepared model and optimizer, the registered scheduler, every process's
        RNG; sharded states under FSDP / DeepSpeed) plus ``trainer.json`` (step, run key, the method's
        ``extra_state()`` such as the KL coefficient), written to ``checkpoint.tmp`` and renamed: a kill leaves the
        old or the new one."""
        acc = self.accelerator
        tmp = folder.with_name(folder.name + ".tmp")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=False)
        if acc.is_main_process:
            meta = {"key": self.key, "step": step, **self.method.extra_state()}
            atomic_write_text(tmp / "trainer.json", json.dumps(meta))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        acc.wait_for_everyone()

    def _keep_policy(self, folder: Path, step: int) -> None:
        """Keep the policy of ``step`` in ``folder/step_<step>``: ``save_pretrained`` of the method's current policy
        (a PEFT model saves its LoRA adapter only, a plain model its full weights), its tokenizer when the method
        changed it (Quark's reward tokens), and ``meta.json`` (run key, step, lean); written to ``step_<step>.tmp``
        and renamed, so a kill leaves no half checkpoint. Returns None."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            pol = self.method.current_policy()
            dest = folder / f"step_{step}"
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            pol.model.save_pretrained(tmp)
            if pol.tokenizer is not self.start.tokenizer:
                pol.tokenizer.save_pretrained(tmp)
            atomic_write_text(tmp / "meta.json", json.dumps({"key": self.key, "step": step, "lean": self.config.lean}))
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        acc.wait_for_everyone()

    def kept_steps(self) -> list[int]:
        """Returns the steps whose policy this run kept (``output_dir/checkpoints/step_<k>``), in order; a kept
        checkpoint of another run (another key) is refused."""
        folder = Path(self.output_dir) / KEPT_DIR
        steps = []
        for d in sorted(folder.glob("step_*")) if folder.is_dir() else []:
            meta = d / "meta.json"
            if d.name.endswith(".tmp") or not meta.is_file():
                continue
            state = json.loads(meta.read_text())
            if state.get("key") != self.key:
                raise ValueError(f"{d} belongs to another run (key {state.get('key')} != {self.key}); use a fresh "
                                 "output_dir")
            steps.append(int(state["step"]))
        return sorted(steps)

    def load_kept(self, step: int) -> Any:
        """Returns the Policy kept at ``step``: the start policy with that step's LoRA adapter merged in (lean mode),
        else the kept weights, at the start policy's dtype and device, with the kept tokenizer if there is one."""
        steps = self.kept_steps()
        if step not in steps:
            raise ValueError(f"{self.method.name} kept no policy at step {step} in {Path(self.output_dir) / KEPT_DIR} "
                             f"(kept steps: {steps})")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        d, start = Path(self.output_dir) / KEPT_DIR / f"step_{step}", self.start
        if json.loads((d / "meta.json").read_text()).get("lean"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(copy.deepcopy(start.model), str(d)).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(str(d), dtype=start.model.dtype).to(start.device)
        kept_tokenizer = (d / "tokenizer_config.json").is_file()  # the method changed the tokenizer (reward tokens)
        tokenizer = AutoTokenizer.from_pretrained(str(d)) if kept_tokenizer else start.tokenizer
        return type(start)(model.eval(), tokenizer, name=f"{start.name}:{self.method.name}@{step}")

    def _resume(self, folder: Path) -> int:
        """Load the checkpoint in ``folder`` (state and the method's extra state). Returns its step (0 without one);
        a checkpoint of another run is refused."""
        meta = folder / "trainer.json"
        if not meta.is_file():
            return 0
        state = json.loads(meta.read_text())
        if state.get("key") != self.key:
            raise ValueError(f"{folder} belongs to another run (key {state.get('key')} != {self.key})")
        self.accelerator.load_state(str(folder))
        self.method.load_extra_state(state)
        return int(state["step"])

    def _finish(self, out: Path, step: int) -> Any:
        """Save the trained policy to ``out/model`` and ``summary.json``, drop the checkpoint. Returns the Policy."""
        acc = self.accelerator
        acc.wait_for_everyone()
        trained = self.method.final_policy()
        if acc.is_main_process:
            tmp = out / "model.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            trained.model.save_pretrained(tmp)
            trained.tokenizer.save_pretrained(tmp)
            shutil.rmtree(out / "model", ignore_errors=True)
            os.replace(tmp, out / "model")
            last = self.history[-5:]
            self.summary = {
                "key": self.key, "steps": step, "reward": self.reward_name, "config": asdict(self.config),
                **self.method.summary_extra(),
                "reward_mean_first": _f(self.history[0].get("reward_mean")) if self.history else None,
                "reward_mean_last5": (sum(_f(r.get("reward_mean")) for r in last) / len(last)) if last else None}
            atomic_write_text(out / "summary.json", json.dumps(self.summary, indent=1))
            shutil.rmtree(out / "checkpoint", ignore_errors=True)
        acc.wait_for_everyone()
        return trained

    # ------------------------------------------------------------------------------------------------ eval
    def _eval(self, step: int) -> None:
        """Mean reward on the held-out prompts (sampled at the agent's answer temperature, scored through an env with
        the training reward), a table of sample responses (``eval/step_<k>.md``), and the ``eval_hook(agent)``
        metrics; one row per eval in ``eval.csv``."""
        acc, m = self.accelerator, self.method
        row: dict[str, Any] = {"step": step}
        if self.eval_env is not None and acc.is_main_process:
            pol = m.current_policy()
            n = self.eval_env.num_envs
            prompts, responses, scores = env_episode(
                self.eval_env, list(range(n)),
                lambda ps: [g[0].strip() for g in pol.generate(ps, max_new_tokens=self.config.response_len,
                                                               temperature=m.temperature, top_p=m.top_p,
                                                               batch_size=m.batch_size,
                                                               seed=stable_hash("eval", m.seed, step))])
            row["eval_reward_mean"] = sum(scores) / len(scores)
            _write_samples(self.output_dir / "eval", m.name, step, row["eval_reward_mean"], scores,
                           [r["instruction"] for r in self.eval_env.rows], responses)
        hook = getattr(m, "eval_hook", None)
        if hook is not None:
            row.update(dict(hook(m) or {}))
        if acc.is_main_process and len(row) > 1:
            CSVLogger(self.output_dir / "eval.csv", list(row)).log(row)
        self.track(row, step)

    # ------------------------------------------------------------------------------------------------ step helpers
    def rollouts(self, step: int, model: Any, tokenizer: Any,
                 prefix: str = "") -> tuple[list[dict[str, Tensor]], list[float], list[str]]:
        """This process's rollouts of ``step``: its share of ``rollout_batch_size`` prompts (a stable function of
        ``(seed, step)``, so a resumed run sees the prompts the uninterrupted one would), in chunks of
        ``rollout_per_device_batch_size``, sampled at ``temperature`` from ``model`` (``prefix`` before each prompt)
        and scored through the env. Returns :func:`~alpaca_farm_env.rl.rollout.collect_rollouts`'s
        ``(chunks, scores, prompts)``."""
        cfg, name = self.config, self.method.name
        positions = positions_for_step(self.n_shard, self.per_process, step, cfg.seed, name)
        return collect_rollouts(
            self.env, positions, self.chunk, model, tokenizer, response_len=cfg.response_len,
            temperature=cfg.temperature, prefix=prefix, context=self.generation_context,
            seed_of=lambda c: stable_hash(name, cfg.seed, step, self.accelerator.process_index, c))

    def generation_context(self) -> ContextManager[Any]:
        """Returns the context to sample in: under FSDP, the unwrapped module's full parameters gathered."""
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type == DistributedType.FSDP:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            return FSDP.summon_full_params(self.module, writeback=False, recurse=True)
        return nullcontext()

    def all_reduce(self, t: Tensor) -> Tensor:
        """Returns the sum of ``t`` over processes (``t`` itself on one process)."""
        acc = self.accelerator
        return acc.reduce(t.to(acc.device), reduction="sum").to(t.device) if acc.num_processes > 1 else t

    def global_mean(self, value: float) -> float:
        """Returns the mean of ``value`` over processes."""
        t = self.all_reduce(torch.tensor([float(value), 1.0]))
        return float(t[0] / t[1])

    def minibatches(self, n: int, size: int, step: int, epoch: int) -> list[list[int]]:
        """Returns shuffled index groups of ``size`` over ``n`` rollouts (drop_last, as the reference's rollouts
        loader), a stable function of ``(seed, process, step, epoch)``."""
        order = epoch_order(n, stable_hash(self.config.seed, self.accelerator.process_index), step * 1000 + epoch,
                            self.method.name + "-mb")
        return [order[i: i + size] for i in range(0, n - size + 1, size)]

    def accumulate(self, module: Any, groups: Sequence[Sequence[int]],
                   loss_fn: Callable[[Sequence[int]], Tensor]) -> None:
        """One optimizer step over ``groups`` of micro-batches: gradients accumulated (DDP syncs only on the last),
        each loss divided by the number of micro-batches, grad-norm clipped, AdamW step, zero_grad."""
        acc = self.accelerator
        for i, idx in enumerate(groups):
            ctx = acc.no_sync(module) if (acc.num_processes > 1 and i < len(groups) - 1) else nullcontext()
            with ctx:
                loss = loss_fn(idx) / len(groups)
                acc.backward(loss)
        if self.config.max_grad_norm is not None:
            acc.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def _write_samples(folder: Path, name: str, step: int, mean: float, scores: Sequence[float],
                   instructions: Sequence[str], responses: Sequence[str]) -> None:
    """Write ``folder/step_<step>.md``: the eval's mean reward and a table of reward, instruction, response."""
    folder.mkdir(exist_ok=True)
    lines = [f"# {name} step {step}: mean reward {mean:.4f}", "", "| reward | instruction | response |",
             "|---|---|---|"]
    for s, ins, r in zip(scores, instructions, responses):
        lines.append(f"| {s:.3f} | {_cell(ins)} | {_cell(r)} |")
    atomic_write_text(folder / f"step_{step}.md", "\n".join(lines) + "\n")


def _f(x: Any) -> float:
    """A CSV cell as a float (NaN when empty)."""
    return float(x) if x not in (None, "") else math.nan


def _cell(text: str, n: int = 200) -> str:
    """``text`` on one line, pipes escaped, cut at ``n`` characters: a markdown table cell."""
    t = " ".join(str(text).split()).replace("|", "\\|")
    return (t[:n] + "...") if len(t) > n else t
