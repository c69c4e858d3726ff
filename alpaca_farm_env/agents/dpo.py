"""``dpo``: Direct Preference Optimization from the SFT policy on the collected pairs, through TRL's ``DPOTrainer``
(tatsu-lab/alpaca_farm ``examples/scripts/dpo.sh`` -> ``examples/dpo.py``, ``src/alpaca_farm/rl/dpo_trainer.py``;
added Nov-Dec 2023, after paper v1).

Data (TRL's preference format): per pair with a winner (:func:`~.common.preference_pairs`), ``prompt`` = the
AlpacaFarm template over instruction and input, ``chosen`` = the preferred output (``output_1`` for preference 1,
``output_2`` for 2), ``rejected`` = the other; draws (1.5, legacy 0) and unlabeled rows are dropped. TRL appends EOS
to both outputs and scores only their tokens (the prompt is masked), as the reference's sequence log-probabilities.

Loss: ``-log sigmoid(beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))])`` with beta 0.1,
``pi_ref`` a frozen deep copy of the starting (SFT) policy, as the reference. Recipe (``dpo.sh``): 2 epochs, lr 1e-6,
cosine, warm-up 3%, weight decay 0, batch 64 (1 per device x 8 accumulation x 8 GPUs; here 8 x 8 on one device),
max length 512 -- :class:`DPOTrainingConfig`'s defaults; presets shrink them. The reference trains in bf16 with FSDP;
here bf16 is used only on a GPU that supports it (never on CPU) unless the config says otherwise, and TRL's default
of gradient checkpointing on is turned off. The reference holds out 500 pairs for its eval loss; nothing is held out
here (no evaluation during training). Longer sequences are cut to ``max_length`` keeping the start (TRL
``keep_start``); TRL drops a pair whose prompt alone fills ``max_length`` (no response token would be left).

Robustness: Trainer checkpoints every ``save_steps`` steps under ``<output_dir>/trainer`` (a rerun resumes from the
last one); the result goes to ``<output_dir>/model`` with ``summary.json`` and ``metrics.csv``, and a rerun on a
finished ``output_dir`` loads it instead of training again. ``report_to`` (``"tensorboard"``, ``"wandb"``) is TRL's:
its TensorBoard events go to ``<output_dir>/runs/dpo`` (:mod:`~alpaca_farm_env.tracking`), named as TRL logs them
(``train/loss``, ``train/rewards/margins``, ...).
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch

from ..tracking import check_report_to, trl_tracking
from ..utils import atomic_write_text, digest
from .base import register_agent
from .common import PreferenceLearner, check_output_dir, policy_fingerprint, preference_pairs


@dataclass
class DPOTrainingConfig:
    """Defaults: ``examples/scripts/dpo.sh`` (beta 0.1, lr 1e-6, 2 epochs, cosine, warm-up ratio 0.03, weight decay 0,
    effective batch 64, max length 512; seed 42 and gradient clipping 1.0 are the HF ``TrainingArguments`` defaults
    the script keeps)."""

    beta: float = 0.1
    learning_rate: float = 1e-6
    num_train_epochs: float = 2.0
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 8  # 8 x 8 = 64 on one device
    max_length: int = 512
    max_grad_norm: float = 1.0
    seed: int = 42
    save_steps: int = 50
    max_steps: int | None = None  # cap on optimizer steps (a tiny preset or a test)
    bf16: bool | None = None  # None: bf16 on a GPU that supports it (the reference's precision), float32 on CPU
    gradient_checkpointing: bool = False  # TRL turns it on by default; it only trades speed for memory
    report_to: str = "none"  # TRL's report_to: "none" (metrics.csv only), "tensorboard" or "wandb"

    def __post_init__(self) -> None:
        check_report_to(self.report_to)


def dpo_rows(preferences: Any) -> list[dict[str, str]]:
    """``{"prompt", "chosen", "rejected"}`` per pair with a winner (TRL's standard preference format)."""
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in preference_pairs(preferences)]


def train_dpo(policy: Any, rows: Sequence[Mapping[str, str]], config: DPOTrainingConfig,
              output_dir: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    """Train ``policy`` (a :class:`~alpaca_farm_env.models.Policy`) in place with TRL's ``DPOTrainer`` against a frozen
    copy of itself, save it to ``<output_dir>/model`` and return the summary (also ``<output_dir>/summary.json``).
    Raises ``ValueError`` when no pair fits ``config.max_length``."""
    from datasets import Dataset
    from datasets.utils import logging as datasets_logging
    from transformers import PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import DPOTrainer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = copy.deepcopy(policy.model).eval()  # pi_ref: the starting policy, frozen
    reference.requires_grad_(False)
    last = get_last_checkpoint(str(out / "trainer")) if (out / "trainer").is_dir() else None
    with trl_tracking(config.report_to, out, "dpo", resume_from=last) as report_to:
        args = _dpo_arguments(config, out / "trainer", policy.device, progress, report_to)
        bars = datasets_logging.is_progress_bar_enabled()
        if not progress:
            datasets_logging.disable_progress_bar()  # TRL's tokenization passes
        try:
            trainer = DPOTrainer(model=policy.model, ref_model=reference, args=args,
                                 train_dataset=Dataset.from_list(list(rows)), processing_class=policy.tokenizer)
        finally:
            if bars:
                datasets_logging.enable_progress_bar()
        if len(trainer.train_dataset) == 0:
            raise ValueError(f"none of the {len(rows)} preference pairs fits max_length={config.max_length} tokens "
                             "(TRL drops a pair whose prompt alone fills it); raise max_length")
        if not progress:
            trainer.remove_callback(PrinterCallback)  # without a progress bar the Trainer prints every log line
        trainer.train(resume_from_checkpoint=last)  # None: from the start
    steps = [h for h in trainer.state.log_history if "loss" in h]  # one entry per optimizer step (logging_steps=1)
    policy.model = trainer.model.eval()
    policy.tokenizer.padding_side = "left"  # generation pads on the left (Policy's convention)
    del trainer, reference
    return _save_dpo_run(policy, steps, len(rows), config, out)


def _dpo_arguments(config: DPOTrainingConfig, trainer_dir: Path, device: torch.device, progress: bool,
                   report_to: Any = "none") -> Any:
    """TRL's ``DPOConfig`` for ``config``: checkpoints in ``trainer_dir``, a log entry per optimizer step, bf16 on a
    GPU that supports it when ``config.bf16`` is ``None``, the trackers ``report_to``."""
    from trl import DPOConfig

    bf16 = config.bf16
    if bf16 is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported() and device.type == "cuda"
    return DPOConfig(
        output_dir=str(trainer_dir),
        beta=config.beta,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        bf16=bool(bf16),
        activation_checkpointing=config.gradient_checkpointing,  # transformers 5's name for it
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        logging_steps=1,
        report_to=report_to,
        run_name="dpo",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=device.type == "cuda",
    )


def _save_dpo_run(policy: Any, steps: Sequence[Mapping[str, Any]], n_pairs: int, config: DPOTrainingConfig,
                  out: Path) -> dict[str, Any]:
    """Write the trained model (``model/``, replaced atomically), ``metrics.csv`` (one row per optimizer step) and
    ``summary.json``, drop the Trainer's checkpoints, and return the summary."""
    tmp, final = out / "model.tmp", out / "model"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.model.save_pretrained(tmp)
    policy.tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # a kill leaves the checkpoint, never half a model

    columns = ["step", "epoch", "loss", "rewards/margins", "rewards/accuracies", "learning_rate"]
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([h.get(c, "") for c in columns] for h in steps)
    summary = {"steps": steps[-1]["step"] if steps else 0, "pairs": n_pairs,
               "first_loss": steps[0]["loss"] if steps else None, "last_loss": steps[-1]["loss"] if steps else None,
               "first_margin": steps[0].get("rewards/margins") if steps else None,
               "last_margin": steps[-1].get("rewards/margins") if steps else None,
               "config": dataclasses.asdict(config)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    shutil.rmtree(out / "trainer", ignore_errors=True)
    return summary


@torch.no_grad()
def implicit_rewards(policy: Any, reference: Any, rows: Sequence[Mapping[str, str]], beta: float = 0.1,
                     batch_size: int = 8) -> dict[str, Any]:
    """DPO's implicit reward margins ``beta * [(log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected)]`` per
    row (``policy`` and ``reference`` are Policies; outputs scored with EOS, as TRL trains them), their mean, the mean
    DPO loss ``-log sigmoid(margin)`` and the share of positive margins: a diagnostic of a trained policy."""
    eos = policy.tokenizer.eos_token or ""
    prompts = [r["prompt"] for r in rows] * 2
    outputs = [r["chosen"] + eos for r in rows] + [r["rejected"] + eos for r in rows]
    pi = policy.logprobs(prompts, outputs, batch_size=batch_size)
    ref = reference.logprobs(prompts, outputs, batch_size=batch_size)
    n = len(rows)
    margins = [beta * ((pi[i] - ref[i]) - (pi[n + i] - ref[n + i])) for i in range(n)]
    losses = [math.log1p(math.exp(-m)) if m > -30 else -m for m in margins]  # -log sigmoid(m)
    return {"margins": margins, "mean_margin": sum(margins) / n, "loss": sum(losses) / n,
            "accuracy": sum(m > 0 for m in margins) / n}


@register_agent("dpo")
class DPOAgent(PreferenceLearner):
    """DPO of the SFT policy on the collected pairs, then sampling (temperature 0.7 by default).

    ``config``: a :class:`DPOTrainingConfig` or a mapping of its fields. Generation kwargs as :class:`~.sft.BaseAgent`
    (``max_new_tokens, temperature, top_p, batch_size, seed``). ``fit`` trains the ``policy`` stage in place (the
    pipeline hands each method its own copy; the reference model is a frozen copy made here) and saves it to
    ``<output_dir>/model``; a rerun on a finished ``output_dir`` loads it. ``respond`` before ``fit`` raises.
    """

    name = "dpo"
    ENVS: ClassVar[dict[str, dict[str, Any]]] = {}
    CONFIG_CLASS: ClassVar[type] = DPOTrainingConfig

    def fit(self, envs: Mapping[str, Any] | None = None, *, policy: Any = None, preferences: Any = None,
            output_dir: str | None = None, **_: Any) -> None:
        """DPO of the ``policy`` stage (in place) on the pairs with a winner, saved to ``<output_dir>/model`` (loaded
        from there when a previous run finished); raises ``ValueError`` on a missing stage or an ``output_dir`` of
        another run."""
        start = self._start_policy(policy, preferences=preferences, output_dir=output_dir)
        rows = dpo_rows(preferences)
        out = Path(output_dir)
        check_output_dir(out, {"method": self.name, "config": dataclasses.asdict(self.config),
                               "data": digest(rows)[:16], "start": policy_fingerprint(start)})
        if (out / "summary.json").is_file() and (out / "model").is_dir():  # finished: load, do not train again
            from transformers import AutoModelForCausalLM

            trained = AutoModelForCausalLM.from_pretrained(str(out / "model"), dtype=start.model.dtype)
            start.model = trained.to(start.device).eval()
            self.summary = json.loads((out / "summary.json").read_text())
        else:
            self.summary = train_dpo(start, rows, self.config, out, progress=self.progress)
        self.fitted = True
