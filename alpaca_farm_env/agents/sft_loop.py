"""The supervised fine-tuning loop every SFT-style method shares (SFT, expert iteration, binary FeedME, binary reward
conditioning): token cross-entropy on the output and EOS only, written once.

Data transformation (tatsu-lab/alpaca_farm ``src/alpaca_farm/data_preprocessor.py``, ``preprocess_for_sft``): the
source (the formatted prompt) and the target (the output followed by the EOS token) are tokenized, concatenated,
truncated to ``max_length``, and the labels of the source positions are ``-100`` (:func:`sft_example`). Batches pad
on the right ("longest"); pad positions carry label ``-100`` and attention 0.

Recipe (``examples/scripts/sft.sh``): AdamW, lr 2e-5, cosine schedule with 3% warm-up, weight decay 0, 3 epochs,
effective batch 128, max length 512 -- :class:`SFTConfig`'s defaults; presets shrink them. Full fine-tuning, or LoRA
on the attention and MLP projections (peft) when ``lora_r > 0``.

Loss (``SFTConfig.loss_averaging``): by default the reference's per-example mean. ``sft.sh`` runs
``examples/supervised.py`` (a Hugging Face ``Trainer``) with ``per_device_train_batch_size 1``,
``gradient_accumulation_steps 16`` on 8 GPUs: each forward holds ONE example, whose loss is the mean cross-entropy
over its own target tokens; the Trainer divides it by the 16 accumulation steps and DDP averages the 8 devices, so an
update follows the mean over the 128 examples of their per-example means: every example weighs the same, whatever
its length. ``"example"`` computes exactly that for any micro-batch size (each example's token mean, summed, divided
by the step's number of examples with a target). ``"token"`` is the mean over all target tokens of the optimizer
step (a long target weighs in proportion to its length).

Robustness: a checkpoint (model or adapter, optimizer, scheduler, step, RNG) every ``save_steps`` optimizer steps,
replaced atomically; a rerun with the same ``output_dir`` resumes from it. Per-step metrics go to
``<output_dir>/metrics.csv``, one row per step: on resume the rows written after the checkpoint (steps about to be
redone) are dropped first. With ``report_to`` (``"tensorboard"`` or ``"wandb"``) the same rows also go to that tracker
(:mod:`~alpaca_farm_env.tracking`; TensorBoard in ``<output_dir>/runs/sft``). A progress bar shows the loss.

Examples with no target token (the prompt alone fills ``max_length``, so truncation leaves only ``-100`` labels) teach
nothing: a micro-batch made only of them is not run, and an optimizer step whose micro-batches all lack targets is
skipped (no update, no metrics row; the step counter and the learning-rate schedule still advance, so the schedule and
resume stay tied to the step number). A warning counts them, and so does ``summary.json``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..tracking import check_report_to, tracked, untracked
from ..utils import atomic_write_text, digest, stable_hash

IGNORE_INDEX = -100


@dataclass
class SFTConfig:
    """Hyper-parameters of :func:`train_sft`, named as in Hugging Face ``TrainingArguments``. Defaults: AlpacaFarm's
    ``examples/scripts/sft.sh`` (3 epochs, lr 2e-5, cosine, warmup ratio 0.03, weight decay 0, batch 128, max
    length 512)."""

    num_train_epochs: float = 3.0
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 16  # 8 x 16 = 128 on one device
    max_length: int = 512
    max_grad_norm: float = 1.0
    lora_r: int = 0  # 0: full fine-tuning; > 0: LoRA of this rank (alpha = 2r, dropout 0.05)
    save_steps: int = 50
    seed: int = 42  # sft.sh
    max_steps: int | None = None  # cap on optimizer steps (a tiny preset or a test)
    loss_averaging: str = "example"
    """How an optimizer step averages the token cross-entropy. ``"example"`` (the reference, ``sft.sh``'s
    per-device batch of 1): the mean over the step's examples of each example's mean over its own target tokens.
    ``"token"``: the mean over all the step's target tokens, so long targets weigh more."""
    report_to: str = "none"  # TrainingArguments' name: also log metrics.csv's rows to "tensorboard" or "wandb"

    def __post_init__(self) -> None:
        if self.loss_averaging not in ("example", "token"):
            raise ValueError(f"loss_averaging must be 'example' or 'token', not {self.loss_averaging!r}")
        check_report_to(self.report_to)


def sft_example(tokenizer: Any, prompt: str, output: str, max_length: int) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` of one demonstration: prompt tokens masked (-100), output + EOS learned."""
    if tokenizer.eos_token_id is None:
        raise ValueError("SFT needs a tokenizer with an EOS token (the target is output + EOS)")
    source = tokenizer(prompt).input_ids
    target = tokenizer(output, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = (source + target)[:max_length]
    labels = ([IGNORE_INDEX] * len(source) + target)[:max_length]
    return {"input_ids": ids, "labels": labels}


def collate(examples: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; pads are ignored by the loss and masked from attention."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, averaging: str = "example",
             denominator: int | None = None) -> torch.Tensor:
    """The SFT cross-entropy of a micro-batch: ``logits`` [B, T, V] predict ``labels`` [B, T] shifted by one, positions
    labelled ``-100`` ignored. ``averaging="token"``: the sum over all target tokens divided by ``denominator`` (by
    default this batch's target tokens: the pooled token mean). ``averaging="example"``: each example's mean over its
    own target tokens, summed over the examples that have any, divided by ``denominator`` (by default their number:
    the mean of per-example means). Passing the whole optimizer step's denominator to each micro-batch makes the
    accumulated gradient that of the step's full batch. Returns a scalar tensor."""
    flat = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    target = labels[:, 1:]
    if averaging == "token":
        total = torch.nn.functional.cross_entropy(flat, target.reshape(-1), ignore_index=IGNORE_INDEX,
                                                  reduction="sum")
        n = int((target != IGNORE_INDEX).sum()) if denominator is None else denominator
        return total / max(n, 1)
    if averaging != "example":
        raise ValueError(f"averaging must be 'example' or 'token', not {averaging!r}")
    per_token = torch.nn.functional.cross_entropy(flat, target.reshape(-1), ignore_index=IGNORE_INDEX,
                                                  reduction="none").view(target.shape)
    count = (target != IGNORE_INDEX).sum(1)
    has = count > 0
    per_example = per_token.sum(1)[has] / count[has]
    n = int(has.sum()) if denominator is None else denominator
    return per_example.sum() / max(n, 1)


def n_targets(example: dict[str, list[int]]) -> int:
    """How many tokens of ``example`` the loss learns: labels are shifted by one, so position 0 is never predicted."""
    return sum(t != IGNORE_INDEX for t in example["labels"][1:])


def examples_key(pairs: Sequence[tuple[str, str]]) -> str:
    """A digest of (prompt, output) pairs: with the config and the start model, what determines a trained model."""
    return digest([list(p) for p in pairs])[:16]


def train_sft(
    policy: Any,
    pairs: Sequence[tuple[str, str]],
    config: SFTConfig,
    output_dir: str | os.PathLike,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``policy`` (a :class:`~alpaca_farm_env.models.Policy`) in place on ``(prompt, output)`` pairs and
    save the result to ``<output_dir>/model``; returns the training summary (also ``<output_dir>/summary.json``).

    A finished ``output_dir`` is loaded instead of trained again; an interrupted one resumes from its checkpoint.
    """
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not pairs:
        raise ValueError("train_sft needs at least one (prompt, output) pair")
    _check_config(config)
    summary_path = out / "summary.json"
    key = digest({"config": untracked(asdict(config)), "data": examples_key(pairs)})[:16]  # tracking is not a key
    if summary_path.is_file() and (out / "model").is_dir():
        summary = json.loads(summary_path.read_text())
        if summary.get("key") != key:  # another config or other data: never reuse a model trained for them
            raise ValueError(f"{out} holds a model trained with another config or data (key {summary.get('key')} != "
                             f"{key}); use a fresh output_dir")
        _load_weights(policy, out / "model", config)
        return summary

    tok = policy.tokenizer
    examples = [sft_example(tok, p, o, config.max_length) for p, o in pairs]
    targets = [n_targets(e) for e in examples]
    n_batches = math.ceil(len(examples) / config.per_device_batch_size)
    steps_per_epoch = max(1, math.ceil(n_batches / config.gradient_accumulation_steps))
    total = math.ceil(steps_per_epoch * config.num_train_epochs)
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    untargeted = _count_untargeted(targets, config, steps_per_epoch, total)  # before the policy is touched: may raise
    model = policy.model
    if config.lora_r > 0:
        model = policy.model = _with_lora(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(config.warmup_ratio * total), total)
    ckpt = out / "checkpoint"
    step = _load_checkpoint(ckpt, model, opt, sched)
    log, losses = _metrics_log(out, step)
    model.train()
    bar = tqdm(total=total, initial=step, desc="sft", unit="step", disable=not progress)
    try:
        with tracked(config.report_to, out, "sft", config=asdict(config), step=step) as track:
            for group in _step_groups(len(examples), config, steps_per_epoch, step, total):
                group = [b for b in group if any(targets[i] for i in b)]  # a micro-batch without targets adds nothing
                loss = _optimizer_step(model, params, opt, sched, [[examples[i] for i in b] for b in group],
                                       tok.pad_token_id, policy.device, config)
                step += 1
                if loss is not None:
                    losses.append(loss)
                    row = {"epoch": step / steps_per_epoch, "loss": loss, "learning_rate": sched.get_last_lr()[0]}
                    log.log({"step": step, "epoch": f"{row['epoch']:.4f}", "loss": repr(loss),
                             "learning_rate": f"{row['learning_rate']:.3e}"})
                    track(row, step)
                    bar.set_postfix(loss=f"{loss:.3f}")
                bar.update(1)
                if step % config.save_steps == 0 or step == total:
                    _save_checkpoint(ckpt, model, opt, sched, step)
    finally:
        bar.close()
    model.eval()
    if config.lora_r > 0:
        model = policy.model = model.merge_and_unload()  # a plain model again: generation and saving as before
    _save_model(policy, out / "model")
    summary = {"key": key, "steps": step, "examples": len(examples), "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None, **untargeted, "config": asdict(config)}
    atomic_write_text(summary_path, json.dumps(summary, indent=1))
    shutil.rmtree(ckpt, ignore_errors=True)
    return summary


def _check_config(config: SFTConfig) -> None:
    """Raise ``ValueError`` for a bad ``loss_averaging`` or ``report_to`` (a subclass's ``__post_init__`` may not check
    them) and ``ImportError`` for a tracker whose package is missing, before any work. Returns None."""
    if config.loss_averaging not in ("example", "token"):
        raise ValueError(f"loss_averaging must be 'example' or 'token', not {config.loss_averaging!r}")
    check_report_to(config.report_to, installed=True)


def _optimizer_step(model: Any, params: list[Any], opt: Any, sched: Any,
                    group: Sequence[Sequence[dict[str, list[int]]]], pad_id: int, device: torch.device,
                    config: SFTConfig) -> float | None:
    """One optimizer step over the micro-batches of ``group`` (each a list of examples with at least one target
    token): the loss of :func:`sft_loss` over the whole group (``config.loss_averaging``), accumulated micro-batch by
    micro-batch, clipped and applied. Returns the step's loss, or ``None`` for an empty group (no update; the schedule
    still advances)."""
    counts = [n_targets(e) for examples in group for e in examples]
    # the denominator of the whole accumulated group: its target tokens, or its examples that have a target
    denominator = sum(counts) if config.loss_averaging == "token" else sum(1 for c in counts if c)
    loss_sum = 0.0
    for examples in group:
        batch = {k: v.to(device) for k, v in collate(examples, pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = sft_loss(logits, batch["labels"], config.loss_averaging, denominator)
        loss.backward()
        loss_sum += float(loss.detach())
    if not group:  # no target token in the whole step: no update, but the schedule keeps pace with the step counter
        with warnings.catch_warnings():  # torch warns when a schedule's first step comes before any update
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            sched.step()
        return None
    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss_sum


def _load_checkpoint(ckpt: Path, model: Any, opt: Any, sched: Any) -> int:
    """Restore model, optimizer, scheduler and torch RNG from ``ckpt`` after a kill; returns the optimizer steps done
    (0 without a checkpoint)."""
    if not (ckpt / "state.pt").is_file():
        return 0
    state = torch.load(ckpt / "state.pt", weights_only=False)
    model.load_state_dict(state["model"], strict=False)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"]


def _metrics_log(out: Path, step: int) -> tuple[Any, list[float]]:
    """``(the metrics.csv logger, the losses already logged)``, resumed at ``step``: rows after it (steps about to be
    redone) are dropped; a fresh run (step 0) starts an empty log with its header."""
    from ..csvlog import CSVLogger

    log = CSVLogger(out / "metrics.csv", ["step", "epoch", "loss", "learning_rate"])
    log.resume(step)  # rows after the checkpoint's step are redone below; a fresh run (step 0) starts an empty log
    if not log.path.is_file():  # the header, even if no step gets a row
        with open(log.path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(log.fields)
    # the loss is logged exactly (repr), so a resumed run reads back the very values the uninterrupted one had
    return log, [float(r["loss"]) for r in log.read() if r.get("loss")]


def _step_groups(n: int, config: SFTConfig, steps_per_epoch: int, start: int, total: int) -> Iterator[list[list[int]]]:
    """The micro-batches (lists of example indices) of optimizer steps ``start + 1`` .. ``total``: each epoch is a
    permutation of the examples seeded by (seed, epoch), cut into batches of ``per_device_batch_size`` and those into
    groups of ``gradient_accumulation_steps``; step ``s`` (0-based) is group ``s % steps_per_epoch`` of epoch
    ``s // steps_per_epoch``, so a resumed run sees the batches the uninterrupted one would."""
    size, accum = config.per_device_batch_size, config.gradient_accumulation_steps
    epoch, batches = None, []
    for s in range(start, total):
        e, g = divmod(s, steps_per_epoch)
        if e != epoch:
            epoch = e
            order = sorted(range(n), key=lambda i: stable_hash("sft-order", config.seed, e, i))
            batches = [order[i : i + size] for i in range(0, n, size)]
        yield batches[g * accum : (g + 1) * accum]


def _count_untargeted(targets: Sequence[int], config: SFTConfig, steps_per_epoch: int, total: int) -> dict[str, int]:
    """Counts, over the whole run's schedule, of the examples with no target token, of the micro-batches made only of
    them (not run) and of the optimizer steps made only of such micro-batches (skipped); warns when there are any.
    Counted from the schedule rather than while training, so a resumed run reports the same numbers."""
    counts = {"n_examples_without_targets": sum(1 for t in targets if not t), "n_batches_without_targets": 0,
              "n_steps_without_targets": 0}
    if not counts["n_examples_without_targets"]:
        return counts
    for group in _step_groups(len(targets), config, steps_per_epoch, 0, total):
        empty = sum(1 for b in group if not any(targets[i] for i in b))
        counts["n_batches_without_targets"] += empty
        counts["n_steps_without_targets"] += empty == len(group)
    warnings.warn(
        f"{counts['n_examples_without_targets']} of {len(targets)} SFT examples have no target token left after "
        f"truncation to max_length={config.max_length} (the prompt fills it) and teach nothing; "
        f"{counts['n_batches_without_targets']} micro-batches hold only such examples and are not run, and "
        f"{counts['n_steps_without_targets']} of {total} optimizer steps have no target token at all and are skipped "
        f"(no update, no metrics row)" + ("; training leaves the model unchanged" if not any(targets) else ""),
        stacklevel=3)
    return counts


def _with_lora(model: Any, config: SFTConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    targets = [n for n in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
               if any(name.endswith(n) for name, _ in model.named_modules())]
    return get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=2 * config.lora_r, lora_dropout=0.05,
                                            target_modules=targets or None, task_type="CAUSAL_LM"))


def _save_checkpoint(ckpt: Path, model: Any, opt: Any, sched: Any, step: int) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": step, "torch_rng": torch.get_rng_state()}, tmp / "state.pt")
    shutil.rmtree(ckpt, ignore_errors=True)
    os.replace(tmp, ckpt)  # a kill leaves either the old checkpoint or the new one, never half of one


def _save_model(policy: Any, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    policy.model.save_pretrained(tmp)
    policy.tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _load_weights(policy: Any, folder: Path, config: SFTConfig) -> None:
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(str(folder), dtype=policy.model.dtype)
    policy.model = trained.to(policy.device).eval()
