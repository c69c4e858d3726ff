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
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Sequence

import torch

from .base import BaseReward, register_reward

_CACHE: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_LOCK = threading.Lock()


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

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Rewards for full texts (prompt and response already concatenated)."""
        model, tokenizer = _load(self.model_name_or_path, self.dtype, self.device)
        out: list[float] = []
        texts = list(texts)
        for start in range(0, len(texts), self.batch_size):
            enc = tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
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
from dataclasses import asdict, dataclass  # noqa: E402


@dataclass
class RewardModelTrainingConfig:
    """Defaults from AlpacaFarm's ``examples/scripts/reward_modeling.sh`` (tatsu-lab/alpaca_farm): 1 epoch, lr 3e-6,
    no weight decay, 3% warmup, cosine schedule, max length 512, seed 42, effective batch 16 (8 GPUs x 1 x 2 accum.).
    Tiny CPU models need a much larger ``learning_rate`` to move at all."""

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


def _preference_rows(pairs: Any, tokenizer: Any, max_length: int) -> list[dict[str, list[int]]]:
    """Rows ``(instruction, input, output_1, output_2, preference)`` -> chosen/rejected token ids.

    ``preference`` 1 means output_1 is preferred, 2 output_2 (AlpacaFarm's convention); other values (draws,
    unparsed) are skipped. Texts are ``format_prompt + output`` without EOS, truncated on the right, exactly what
    ``RewardModelReward`` scores (TRL would append an EOS to untokenized text, so we hand it token ids).
    """
    from ..data import format_prompt

    rows = []
    for ex in (pairs.to_dict("records") if hasattr(pairs, "to_dict") else pairs):
        pref = ex.get("preference")
        if pref not in (1, 2, 1.0, 2.0):
            continue
        prompt = format_prompt(ex["instruction"], ex.get("input") or "")
        good, bad = (ex["output_1"], ex["output_2"]) if int(pref) == 1 else (ex["output_2"], ex["output_1"])
        enc = tokenizer([prompt + good, prompt + bad], truncation=True, max_length=max_length)
        rows.append({"chosen_ids": enc.input_ids[0], "rejected_ids": enc.input_ids[1]})
    if not rows:
        raise ValueError("no usable preference rows (need preference 1 or 2)")
    return rows


def train_reward_model(
    pairs: Any,
    backbone: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: RewardModelTrainingConfig | None = None,
    **overrides: Any,
) -> Path:
    """Train a scalar reward model on preference rows with TRL's ``RewardTrainer`` (Bradley-Terry loss) and save it
    to ``output_dir`` (model + tokenizer, written to a temp dir and renamed, so a crash leaves no half folder).

    ``backbone``: a folder or hub id of any model ``AutoModelForSequenceClassification`` can load (a causal LM gets a
    fresh scalar head). ``overrides`` replace fields of ``config``. Returns the folder, usable as
    ``RewardModelReward(output_dir)``.
    """
    import shutil
    import tempfile

    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    cfg = RewardModelTrainingConfig(**{**asdict(config or RewardModelTrainingConfig()), **overrides})
    tokenizer = AutoTokenizer.from_pretrained(str(backbone))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model = AutoModelForSequenceClassification.from_pretrained(str(backbone), num_labels=1, dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    dataset = Dataset.from_list(_preference_rows(pairs, tokenizer, cfg.model_max_length))

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=output_dir.name + ".tmp-", dir=output_dir.parent))
    try:
        args = RewardConfig(
            output_dir=str(tmp / "trainer"),
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
            save_strategy="no",
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            disable_dropout=True,
        )
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        final = tmp / "model"
        trainer.model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.rename(final, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with _LOCK:  # a model saved under a cached path must not be served stale
        for key in [k for k in _CACHE if k[0] == str(output_dir.resolve())]:
            del _CACHE[key]
    return output_dir
