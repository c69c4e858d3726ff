"""What ``grpo`` (TRL's ``GRPOTrainer``), ``rloo`` (``RLOOTrainer``) and ``online_dpo`` (``OnlineDPOTrainer``) share:
the reward scored through the env, the callback that writes ``metrics.csv``, keeps each save's policy and calls the
eval hook, and the agent plumbing around ``trainer.train()``; their configs are in :mod:`~.trl_config`.

Data: the ``unlabeled`` env's rows whose prompt fits ``max_prompt_length`` tokens, in the columns of
:func:`~alpaca_farm_env.envs.trl_dataset.as_trl_dataset` plus ``position`` (the row in the rollout env).
Reward: TRL calls :class:`EnvReward` with each batch of completions, which steps them through a vector env over the same
rows with the chosen reward (``AlpacaFarmVectorEnv.from_env``): one batched reward call, as PPO's rollouts. The reward
is the constructor's ``reward=``, else the ``reward`` stage, else the env's own; the evaluator's judge is refused.
Output dir: TRL's resume checkpoints in ``trainer/`` every ``save_steps`` (a rerun resumes from the last, redoing the
steps logged after it); with ``keep_checkpoints`` the policy of each save in ``checkpoints/step_<k>`` (the LoRA adapter
only with ``use_peft``); ``metrics.csv`` (a row per optimizer step), ``eval.csv`` (the eval hook's); at the end
``model/`` (LoRA merged) and ``summary.json``, which a rerun loads (``fit.json`` refuses a dir of another run).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from ..csvlog import CSVLogger
from ..envs.reward_info import learning_reward
from ..envs.vector_env import AlpacaFarmVectorEnv
from ..rl.rollout import env_rows, is_alpaca_farm_env
from ..rl.trainer import run_key
from ..tracking import trl_tracking
from ..utils import atomic_write_text
from .common import as_config, check_output_dir, policy_fingerprint, reward_of_stage
from .sft import BaseAgent
from .trl_config import NOT_TRL, TRLGroupConfig, TRLOnlineConfig, kept_steps_of

__all__ = ["EnvReward", "TRLGroupConfig", "TRLOnlineAgent", "TRLOnlineConfig", "kept_steps_of"]

KEPT_DIR = "checkpoints"


class EnvReward:
    """A TRL reward function that scores completions through the env: ``f(prompts, completions, position, **_) ->
    list[float]``, ``position`` being each completion's row in ``rows`` (a dataset column). Each call resets a vector
    env over ``rows`` (``AlpacaFarmVectorEnv.from_env(env, rows, ...)``, one per batch size) onto those rows and steps
    it with the completions: one batched reward call. ``backend`` is the reward backend it scores with."""

    def __init__(self, env: Any, rows: Sequence[Mapping[str, Any]], reward: Any, reward_kwargs: Mapping[str, Any],
                 seed: int):
        self.env, self.rows, self.seed = env, list(rows), seed
        self.reward, self.reward_kwargs = reward, dict(reward_kwargs)
        self._envs: dict[int, AlpacaFarmVectorEnv] = {}
        self.backend = self._vector(1).reward_backend
        self.__name__ = f"alpaca_farm_{getattr(self.backend, 'name', 'reward')}"  # TRL logs rewards/<name>

    def _vector(self, n: int) -> AlpacaFarmVectorEnv:
        if n not in self._envs:
            self._envs[n] = AlpacaFarmVectorEnv.from_env(self.env, self.rows, n, reward=self.reward,
                                                         reward_kwargs=self.reward_kwargs, seed=self.seed)
        return self._envs[n]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], position: Sequence[int],
                 **_: Any) -> list[float]:
        vec = self._vector(len(completions))
        vec.reset(options={"index": [int(p) for p in position]})
        _, rewards, *_ = vec.step([str(c).replace("\x00", "") for c in completions])
        return [float(r) for r in rewards]


def _callback_class() -> type:
    """The ``transformers.TrainerCallback`` subclass of :class:`TRLOnlineAgent` (built on first use: transformers is
    imported only when a method trains)."""
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        """A row of ``metrics.csv`` and ``history`` per logged optimizer step, the eval hook every ``eval_steps``, the
        policy kept at each save (``keep_checkpoints``), and the stop at ``stop_after``."""

        def __init__(self, agent: "TRLOnlineAgent"):
            self.agent = agent

        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            logs = logs or {}
            if "loss" not in logs or not state.is_world_process_zero:  # the end-of-training summary has no loss
                return
            self.agent._record(state.global_step, logs, model)

        def on_save(self, args, state, control, model=None, **kwargs):
            if self.agent.config.keep_checkpoints and state.is_world_process_zero:
                self.agent._keep(state.global_step, model)

        def on_step_end(self, args, state, control, **kwargs):
            stop = self.agent.config.stop_after
            if stop is not None and stop <= state.global_step < self.agent.config.max_steps:
                control.should_training_stop = True  # without a save: a rerun resumes as after a kill

    return Recorder


class TRLOnlineAgent(BaseAgent):
    """An online RL method on a TRL trainer (``TRAINER`` over ``TRL_CONFIG``), trained from the ``policy`` stage on the
    ``unlabeled`` env's prompts against the env's reward (the ``reward`` stage by default); then sampling as
    :class:`~.sft.BaseAgent` (temperature 0.7 by default, as every method's outputs).

    Constructor: ``policy``; ``config``: a ``CONFIG_CLASS`` or a mapping of its fields; ``reward=`` /
    ``reward_kwargs=``: any registered reward backend, overriding the ``reward`` stage; ``evaluate``: the
    ``eval_hook``; the rest as :class:`~.sft.BaseAgent` (``max_new_tokens``, ``temperature``, ...)."""

    ENVS: ClassVar[dict[str, dict[str, Any]]] = {
        "unlabeled": {"id": "AlpacaFarm-v0", "split": "unlabeled", "reward": "length"},
    }
    STAGES: ClassVar[tuple[str, ...]] = ("policy", "reward", "output_dir")
    CONFIG_CLASS: ClassVar[type] = TRLOnlineConfig
    TRL_MODULE: ClassVar[str] = "trl"  # where TRAINER and TRL_CONFIG are, e.g. "GRPOTrainer" and "GRPOConfig"
    TRAINER: ClassVar[str] = ""
    TRL_CONFIG: ClassVar[str] = ""
    CSV_FIELDS: ClassVar[tuple[str, ...]] = ("reward", "reward_std", "kl", "entropy", "completions/mean_length",
                                             "completions/clipped_ratio", "loss", "grad_norm", "learning_rate")
    LOGGED_AS: ClassVar[dict[str, str]] = {}
    """The TRL log key of a ``metrics.csv`` column whose name differs (``reward`` is the env's mean reward)."""
    REFERENCE_FROM_PATH: ClassVar[bool] = True
    """The trainer loads its reference policy from the model's ``name_or_path`` when ``beta`` is not 0 (GRPO, RLOO);
    otherwise it copies the model itself."""

    def __init__(self, policy: Any = None, *, config: Any = None, reward: Any = None,
                 reward_kwargs: dict[str, Any] | None = None, evaluate: Callable[[Any], Mapping[str, float]] | None
                 = None, **kwargs: Any):
        super().__init__(policy, **kwargs)
        self.config = as_config(self.CONFIG_CLASS, config)
        self.reward_override = (reward, dict(reward_kwargs or {})) if reward is not None else None
        self.eval_hook = evaluate
        self.fitted = False
        self.summary: dict[str, Any] = {}
        self.reward_name = ""
        self.output_dir: Path | None = None
        self.start: Any = None
        self.key = ""
        self._training: Any = None  # a Policy over the model being trained, during fit

    # ------------------------------------------------------------------------------------------------ checkpoints
    @classmethod
    def checkpoint_schedule(cls, config: Any = None) -> list[int]:
        """Returns the steps at which a fit with ``config`` (a ``CONFIG_CLASS``, a mapping of its fields, or None)
        saves, and keeps its policy when ``keep_checkpoints`` is on: every ``save_steps``-th and the last."""
        return kept_steps_of(as_config(cls.CONFIG_CLASS, config))

    def checkpoint_steps(self) -> list[int]:
        """Returns the steps whose policy the last fit kept (``output_dir/checkpoints/step_<k>``), in order; [] before
        a fit. A kept policy of another run (another key) raises ``ValueError``."""
        folder = self.output_dir / KEPT_DIR if self.output_dir is not None else None
        steps = []
        for d in sorted(folder.glob("step_*")) if folder is not None and folder.is_dir() else []:
            if d.name.endswith(".tmp") or not (d / "meta.json").is_file():
                continue
            meta = json.loads((d / "meta.json").read_text())
            if meta.get("key") != self.key:
                raise ValueError(f"{d} belongs to another run (key {meta.get('key')} != {self.key}); use a fresh "
                                 "output_dir")
            steps.append(int(meta["step"]))
        return sorted(steps)

    def checkpoint_policy(self, step: int) -> Any:
        """Returns the Policy kept at ``step`` by the last fit (the start policy with the step's LoRA adapter merged
        in, or the kept weights); ``agent.policy = agent.checkpoint_policy(k)`` makes the agent answer with it. Raises
        ``ValueError`` when no policy was kept at ``step``."""
        steps = self.checkpoint_steps()
        if step not in steps:
            raise ValueError(f"{self.name} kept no policy at step {step} (kept steps: {steps}); fit with "
                             "keep_checkpoints=True")
        from transformers import AutoModelForCausalLM

        d, start = self.output_dir / KEPT_DIR / f"step_{step}", self.start
        if json.loads((d / "meta.json").read_text()).get("use_peft"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(copy.deepcopy(start.model), str(d)).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(str(d), dtype=start.model.dtype).to(start.device)
        return type(start)(model.eval(), start.tokenizer, name=f"{start.name}:{self.name}@{step}")

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self, envs: Mapping[str, Any], *, policy: Any = None, reward: Any = None, output_dir: Any = None,
            **_: Any) -> None:
        """Train from the ``policy`` stage on ``envs["unlabeled"]`` against the chosen reward in ``output_dir`` (a
        finished one is loaded, a stopped one resumed). Returns None; afterwards ``policy`` is the trained policy
        (unless ``stop_after`` stopped the run). Raises ``ValueError`` on a missing env or stage, the evaluator's
        judge as the reward, or no prompt that fits ``max_prompt_length``."""
        if output_dir is None:
            raise ValueError(f"{self.name} needs the output_dir stage (checkpoints, metrics.csv, the trained policy)")
        if not envs or "unlabeled" not in envs:
            raise ValueError(f"{self.name} needs envs['unlabeled']: {self.ENVS['unlabeled']}")
        env = envs["unlabeled"]
        if not is_alpaca_farm_env(env):
            raise TypeError(f"{type(env).__name__} is not an AlpacaFarm-v0 env (gym.make('AlpacaFarm-v0'))")
        self.fitted, self._training = False, None
        start = self.start = self._start_policy(policy)
        spec, kwargs = self._choose_reward(env, None if reward is None else reward_of_stage(reward))
        rows = self._prompt_rows(env, start.tokenizer)
        scorer = EnvReward(env, rows, spec, kwargs, self.config.seed)
        self.reward_name = str(getattr(scorer.backend, "name", spec))
        self.key = run_key(self.name, self.config, spec, kwargs, f"{start.name}:{policy_fingerprint(start)}",
                           len(rows), _world_size())
        out = self.output_dir = Path(output_dir)
        check_output_dir(out, {"method": self.name, "key": self.key})
        if (out / "summary.json").is_file() and (out / "model").is_dir():  # finished: load, do not train again
            self._load_finished(out, start)
            return
        trained = self._train(start, rows, scorer, out)
        if trained is not None:
            self._policy, self.fitted = trained, True

    def _choose_reward(self, env: Any, stage: tuple[Any, dict[str, Any]] | None) -> tuple[Any, dict[str, Any]]:
        """Returns ``(spec, kwargs)`` of the reward to learn from (:func:`~..envs.reward_info.learning_reward`)."""
        return learning_reward(env, self.reward_override, stage, self.evaluator, self.name)

    def _prompt_rows(self, env: Any, tokenizer: Any) -> list[dict[str, Any]]:
        """The env's rows whose prompt fits ``max_prompt_length`` tokens (all when it is None)."""
        limit = self.config.max_prompt_length
        rows = [r for r in env_rows(env) if limit is None or len(tokenizer(r["prompt"]).input_ids) <= limit]
        if not rows:
            raise ValueError(f"{self.name}: no prompt of the env fits max_prompt_length={limit} tokens; raise it")
        return rows

    def _train(self, start: Any, rows: list[dict[str, Any]], scorer: EnvReward, out: Path) -> Any:
        """Build TRL's trainer over a copy of the start policy, train (resuming from the last checkpoint in
        ``out/trainer``) and save; returns the trained Policy, or None when ``stop_after`` stopped the run."""
        import importlib

        from datasets import Dataset
        from transformers.trainer_utils import get_last_checkpoint

        from ..models import Policy

        cfg = self.config
        data = Dataset.from_list([{"prompt": r["prompt"], "instruction": r["instruction"], "input": r["input"],
                                   "reference_output": r["reference_output"], "position": i}
                                  for i, r in enumerate(rows)])
        last = get_last_checkpoint(str(out / "trainer")) if (out / "trainer").is_dir() else None
        resumed = json.loads((Path(last) / "trainer_state.json").read_text())["global_step"] if last else 0
        self.csv = CSVLogger(out / "metrics.csv", ["step", *self.CSV_FIELDS])
        self.csv.resume(resumed)  # rows logged after the checkpoint are redone
        if (out / "eval.csv").is_file():  # so are the evals after it
            CSVLogger(out / "eval.csv", (out / "eval.csv").read_text().splitlines()[0].split(",")).resume(resumed)
        self.history = [{k: _number(v) for k, v in r.items()} for r in self.csv.read()]
        peft = None
        if cfg.use_peft:
            from peft import LoraConfig

            peft = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules="all-linear", task_type="CAUSAL_LM")
        model = copy.deepcopy(start.model)  # the stage's policy is shared with other methods
        if self.REFERENCE_FROM_PATH and cfg.beta != 0.0 and not cfg.use_peft:
            # TRL loads the reference policy from the model's name_or_path: the start policy, saved once
            ref = out / "reference"
            if not (ref / "config.json").is_file():
                start.model.save_pretrained(ref)
            model.config._name_or_path = str(ref)
        with trl_tracking(cfg.report_to, out, self.name, resume_from=last) as report_to:
            trainer = getattr(importlib.import_module(self.TRL_MODULE), self.TRAINER)(
                model=model, reward_funcs=scorer, args=self._trl_args(out / "trainer", start, report_to),
                train_dataset=data, processing_class=start.tokenizer, peft_config=peft,
                callbacks=[_callback_class()(self)])
            if not self.progress:
                from transformers import PrinterCallback

                trainer.remove_callback(PrinterCallback)
            self._training = Policy(trainer.model, start.tokenizer, name=f"{start.name}:{self.name}")
            trainer.model.train()  # Policy() switched it to eval mode
            try:
                trainer.train(resume_from_checkpoint=last)
            finally:
                self._training = None
        if trainer.state.global_step < cfg.max_steps:
            return None  # stopped at stop_after: the last checkpoint stays for the rerun
        model = trainer.model.merge_and_unload() if cfg.use_peft else trainer.model
        start.tokenizer.padding_side = "left"
        trained = Policy(model.eval(), start.tokenizer, name=f"{start.name}:{self.name}")
        self._save(trained, out, trainer.state.global_step, len(rows))
        return trained

    def _trl_args(self, folder: Path, start: Any, report_to: Any) -> Any:
        """TRL's config (``TRL_CONFIG``) for ``config``: its TRL fields as they are, bf16 resolved (only on a GPU
        that supports it), checkpoints in ``folder`` (the last one kept), a log entry per optimizer step, the
        trackers ``report_to`` (:func:`~alpaca_farm_env.tracking.trl_tracking`'s)."""
        import importlib

        import torch

        cfg, device = self.config, start.device
        bf16 = cfg.bf16
        if bf16 is None:
            bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_TRL}
        return getattr(importlib.import_module(self.TRL_MODULE), self.TRL_CONFIG)(
            output_dir=str(folder), **fields, report_to=report_to, bf16=bool(bf16),
            activation_checkpointing=cfg.gradient_checkpointing,
            save_strategy="steps", save_total_limit=1, logging_steps=1, disable_tqdm=not self.progress,
            dataloader_num_workers=0, dataloader_pin_memory=device.type == "cuda", use_cpu=device.type == "cpu")

    # ------------------------------------------------------------------------------------------------ callbacks
    def _record(self, step: int, logs: Mapping[str, Any], model: Any) -> None:
        """A row of ``metrics.csv`` and ``history`` for ``step``; the eval hook on every ``eval_steps``-th step."""
        named = {k: self.LOGGED_AS.get(k, k) for k in self.CSV_FIELDS}
        row = {"step": step, **{k: logs[key] for k, key in named.items() if key in logs}}
        self.csv.log(row)
        self.history.append(row)
        every = self.config.eval_steps
        if every and step % every == 0 and self.eval_hook is not None:
            was_training = model.training
            try:
                metrics = dict(self.eval_hook(self) or {})
            finally:
                model.train(was_training)  # the hook's sampling put the model in eval mode
            if metrics:
                CSVLogger(self.output_dir / "eval.csv", ["step", *metrics]).log({"step": step, **metrics})

    def _keep(self, step: int, model: Any) -> None:
        """Keep the policy of ``step`` in ``checkpoints/step_<step>`` (``save_pretrained``: a PEFT model saves its
        adapter only) with ``meta.json`` (run key, step, use_peft), written to ``.tmp`` and renamed."""
        dest = self.output_dir / KEPT_DIR / f"step_{step}"
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        atomic_write_text(tmp / "meta.json", json.dumps({"key": self.key, "step": step,
                                                         "use_peft": self.config.use_peft}))
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)

    # ------------------------------------------------------------------------------------------------ results
    def _save(self, trained: Any, out: Path, steps: int, n_prompts: int) -> None:
        """Write ``model/`` (atomically), ``summary.json``; drop the resume checkpoints and the saved reference."""
        tmp = out / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        trained.model.save_pretrained(tmp)
        trained.tokenizer.save_pretrained(tmp)
        shutil.rmtree(out / "model", ignore_errors=True)
        os.replace(tmp, out / "model")
        rewards = [r["reward"] for r in self.history if "reward" in r and not math.isnan(_number(r["reward"]))]
        self.summary = {"key": self.key, "steps": steps, "reward": self.reward_name, "prompts": n_prompts,
                        "config": dataclasses.asdict(self.config),
                        "reward_first": _number(rewards[0]) if rewards else None,
                        "reward_last5": sum(map(_number, rewards[-5:])) / len(rewards[-5:]) if rewards else None}
        atomic_write_text(out / "summary.json", json.dumps(self.summary, indent=1))
        shutil.rmtree(out / "trainer", ignore_errors=True)
        shutil.rmtree(out / "reference", ignore_errors=True)

    def _load_finished(self, out: Path, start: Any) -> None:
        from transformers import AutoModelForCausalLM

        from ..models import Policy

        model = AutoModelForCausalLM.from_pretrained(str(out / "model"), dtype=start.model.dtype).to(start.device)
        self._policy = Policy(model.eval(), start.tokenizer, name=f"{start.name}:{self.name}")
        self.summary = json.loads((out / "summary.json").read_text())
        self.history = [{k: _number(v) for k, v in r.items()} for r in CSVLogger(out / "metrics.csv", []).read()]
        self.fitted = True

    # ------------------------------------------------------------------------------------------------ protocol
    @property
    def policy(self) -> Any:
        """The policy the agent answers with: the one being trained during ``fit`` (for the eval hook), the trained
        one after it (or the kept checkpoint assigned to it), the start policy before."""
        return self._training if self._training is not None else BaseAgent.policy.fget(self)

    @policy.setter
    def policy(self, policy: Any) -> None:
        self._policy = policy

    def respond(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        """One sampled response per observation from :attr:`policy`; before ``fit`` has finished only from inside the
        eval hook."""
        if not self.fitted and self._training is None:
            raise RuntimeError(f"{self.name} answers with the policy it trains: call fit() first")
        return super().respond(observations)

    def describe(self) -> dict[str, Any]:
        """The settings that determine the outputs: the sampling agent's, the config and the reward's name."""
        return {**super().describe(), "config": dataclasses.asdict(self.config), "reward": self.reward_name}


def _number(value: Any) -> float:
    """A CSV cell or a logged value as a float (NaN when empty)."""
    return float(value) if value not in (None, "") else math.nan


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
