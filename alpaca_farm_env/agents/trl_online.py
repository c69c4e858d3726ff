"""What ``grpo`` (TRL's ``GRPOTrainer``) and ``rloo`` (``RLOOTrainer``) share: their common config fields, the reward
scored through the env, the callback that writes ``metrics.csv``, keeps each save's policy and calls the eval hook,
and the agent plumbing around ``trainer.train()``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from ..csvlog import CSVLogger
from ..envs.reward_info import learning_reward
from ..envs.vector_env import AlpacaFarmVectorEnv
from ..rl.rollout import env_rows, is_alpaca_farm_env
from ..rl.trainer import run_key
from ..tracking import check_report_to, trl_tracking
from ..utils import atomic_write_text
from .common import as_config, check_output_dir, policy_fingerprint, reward_of_stage
from .sft import BaseAgent

__all__ = ["EnvReward", "TRLOnlineAgent", "TRLOnlineConfig", "kept_steps_of"]

KEPT_DIR = "checkpoints"
NOT_TRL = frozenset({"bf16", "gradient_checkpointing", "eval_steps", "keep_checkpoints", "max_prompt_length",
                     "stop_after", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "report_to"})
"""Config fields that are not passed to the TRL config as they are (resolved, renamed, or ours)."""


@dataclass
class TRLOnlineConfig:
    """The fields GRPO and RLOO share, named as TRL names them. Defaults: huggingface/trl ``trl/trainer/
    grpo_config.py`` / ``rloo_config.py`` (TRL 1.16; the configs ``trl/scripts/grpo.py`` and ``trl/scripts/rloo.py``
    run with), else their base ``transformers.TrainingArguments``; fields marked *ours* have no TRL counterpart, and
    the few defaults that differ say why."""

    RANGES: ClassVar[dict[str, tuple[float | None, float | None]]] = {"eval_steps": (0, None), "top_k": (0, None),
                                                                       "num_generations": (2, None)}
    """``eval_steps`` 0: no periodic eval; ``top_k`` 0: no top-k filter; a group needs at least 2 completions."""

    learning_rate: float = 1e-6
    """AdamW learning rate, the peak of the schedule. TRL: 1e-6."""
    lr_scheduler_type: str = "linear"
    """Learning-rate schedule. ``TrainingArguments``: linear."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up. ``TrainingArguments``: 0."""
    weight_decay: float = 0.0
    """AdamW weight decay. ``TrainingArguments``: 0."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon. ``TrainingArguments``: 1e-8."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip. ``TrainingArguments``: 1.0."""
    per_device_train_batch_size: int = 8
    """Completions per device per micro-batch (``num_generations`` of them share a prompt). ``TrainingArguments``:
    8."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step (and per generation batch). ``TrainingArguments``: 1."""
    max_steps: int = 390
    """Optimizer steps of the run. TRL runs ``num_train_epochs`` (3) over the dataset instead; a fixed count lets the
    steps a run keeps be known before it starts (the benchmark checks ``select: step:<k>`` first). 390: PPO's
    ``total_steps`` (tatsu-lab/alpaca_farm ``examples/scripts/rlhf_ppo.sh``), so the RL methods share a step axis."""
    num_generations: int = 8
    """Completions sampled per prompt (the group). GRPO: 8 (RLOO: 2)."""
    max_completion_length: int = 512
    """Most tokens sampled per completion. TRL: 512."""
    temperature: float = 1.0
    """Sampling temperature of the completions. TRL: 1.0."""
    top_p: float = 1.0
    """Nucleus sampling of the completions. TRL: 1.0."""
    top_k: int = 0
    """Top-k sampling of the completions (0: off). TRL: 0."""
    beta: float = 0.0
    """KL coefficient towards the starting policy (0: no reference model). GRPO: 0.0 (RLOO: 0.05)."""
    num_iterations: int = 1
    """Optimisation passes over each generation batch (mu). TRL: 1."""
    epsilon: float = 0.2
    """Clip range of the importance ratio. TRL: 0.2."""
    epsilon_high: float | None = None
    """Upper clip bound (None: ``epsilon``). TRL: None."""
    mask_truncated_completions: bool = False
    """Leave completions cut at ``max_completion_length`` out of the loss. TRL: False."""
    seed: int = 42
    """Seed of initialisation, prompt order and sampling. ``TrainingArguments``: 42."""
    max_prompt_length: int | None = 192
    """*Ours*: prompts longer than this many tokens are dropped (None: none), as PPO's ``query_len`` drops them
    (tatsu-lab/alpaca_farm ``examples/rlhf_ppo.py``: 192), so the RL methods train on the same prompts; TRL 1.x
    truncates no prompt."""
    bf16: bool | None = None
    """bf16 mixed precision; None: on a GPU that supports it, never on CPU. TRL: True unless fp16 (slow on CPU)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass. TRL: True; off here, as for DPO: it only trades speed for
    memory."""
    use_peft: bool = False
    """Train a LoRA adapter instead of the full model (``trl/trainer/model_config.py`` ``ModelConfig``: False)."""
    lora_r: int = 16
    """LoRA rank with ``use_peft``. ``ModelConfig``: 16."""
    lora_alpha: int = 32
    """LoRA alpha with ``use_peft``. ``ModelConfig``: 32."""
    lora_dropout: float = 0.05
    """LoRA dropout with ``use_peft``. ``ModelConfig``: 0.05."""
    save_steps: int = 20
    """A resume checkpoint (and, with ``keep_checkpoints``, a kept policy) every this many steps and at the end.
    ``TrainingArguments``: 500; 20 as PPO (``rlhf_ppo.sh``), so the kept steps are PPO's."""
    eval_steps: int = 20
    """*Ours*: the agent's ``eval_hook`` every this many steps, logged to ``eval.csv`` (0: none), as PPO."""
    keep_checkpoints: bool = False
    """*Ours*: keep the policy of each save in ``output_dir/checkpoints/step_<k>`` (the benchmark's ``select``)."""
    report_to: str = "none"
    """Where TRL also logs (``none``, ``tensorboard``, ``wandb``; ``alpaca_farm_env.tracking``: TensorBoard in
    ``<output_dir>/runs/<method>``); not part of the run key. TRL: none."""
    stop_after: int | None = None
    """*Ours*: stop after this many steps without saving there (tests of resume); not part of the run key."""

    def __post_init__(self) -> None:
        check_report_to(self.report_to)

    @property
    def total_steps(self) -> int:
        """The run's optimizer steps (``max_steps``), under the name the benchmark's messages use."""
        return self.max_steps


def kept_steps_of(config: TRLOnlineConfig) -> list[int]:
    """Returns the steps at which a run of ``config`` saves (every ``save_steps``-th and the last, ``max_steps``)."""
    total, every = int(config.max_steps), max(1, int(config.save_steps))
    return sorted(set(range(every, total + 1, every)) | ({total} if total > 0 else set()))


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
    TRAINER: ClassVar[str] = ""  # the trl class names, e.g. "GRPOTrainer" and "GRPOConfig"
    TRL_CONFIG: ClassVar[str] = ""
    CSV_FIELDS: ClassVar[tuple[str, ...]] = ("reward", "reward_std", "kl", "entropy", "completions/mean_length",
                                             "completions/clipped_ratio", "loss", "grad_norm", "learning_rate")

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
        import trl
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
        if cfg.beta != 0.0 and not cfg.use_peft:
            # TRL loads the reference policy from the model's name_or_path: the start policy, saved once
            ref = out / "reference"
            if not (ref / "config.json").is_file():
                start.model.save_pretrained(ref)
            model.config._name_or_path = str(ref)
        with trl_tracking(cfg.report_to, out, self.name, resume_from=last) as report_to:
            trainer = getattr(trl, self.TRAINER)(
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
        import torch
        import trl

        cfg, device = self.config, start.device
        bf16 = cfg.bf16
        if bf16 is None:
            bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_TRL}
        return getattr(trl, self.TRL_CONFIG)(
            output_dir=str(folder), **fields, report_to=report_to, bf16=bool(bf16),
            activation_checkpointing=cfg.gradient_checkpointing,
            save_strategy="steps", save_total_limit=1, logging_steps=1, disable_tqdm=not self.progress,
            dataloader_num_workers=0, dataloader_pin_memory=device.type == "cuda", use_cpu=device.type == "cpu")

    # ------------------------------------------------------------------------------------------------ callbacks
    def _record(self, step: int, logs: Mapping[str, Any], model: Any) -> None:
        """A row of ``metrics.csv`` and ``history`` for ``step``; the eval hook on every ``eval_steps``-th step."""
        row = {"step": step, **{k: logs[k] for k in self.CSV_FIELDS if k in logs}}
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
