"""The ``best`` variant of ``distilled_gpt4``: a fine-tuned all-MiniLM-L6-v2 cross-encoder trained on GPT-4's labels.

Model (the design a probe of frozen and fine-tuned MiniLM judges chose; docs/judge.md, the ``best`` variant).
A per-output score

    s(x, o) = v . meanpool(MiniLM([x ; o]))  +  w . (hand(x, o) / scale)

where ``[x ; o]`` is the tokenizer's sentence pair (prompt, output) truncated to ``max_length`` word pieces and
``hand`` are the 25 hand features of :mod:`.features` over the *full* output (its full length included, which the
truncated encoder input cannot see). ``P(o2 beats o1) = sigmoid(s(x, o2) - s(x, o1))``: Bradley-Terry, so swapping
the outputs gives exactly ``1 - P``. Trained end-to-end with the Bradley-Terry (logistic) loss, draws as 0.5
targets; encoder lr ``encoder_lr``, head lr ``head_lr`` (AdamW, linear warm-up); ``w`` is initialised from the
hand-feature Bradley-Terry regression and ``v`` at zero, so step 0 is the hand-feature judge. fp32 by default
(``bf16=True`` turns on the probe's bf16 autocast, fast only on CPUs with native bf16).

Pool members (``pooled``/``noisy_pooled`` with ``variant="best"``): member ``h`` rescales the encoder term and refits
the hand weights, ``s_h = a_h * s_enc + w_h . hand / scale``, by Bradley-Terry on a bootstrap resample (seed
``1000*seed + h``) of ``n_pool_pairs`` training pairs -- its own seed and data subset, as in the fast variant.

Artifacts live in ``utils.cache_dir("judge", "artifacts", "distilled_best_<key>")`` (``model.pt`` ~90 MB, never in
the repo); training checkpoints (``checkpoint.pt``, every ``checkpoint_every`` steps, atomically replaced) in the
same folder, so a killed run resumes where it stopped. Per-text encoder scores are cached in SQLite keyed by the
text digest and the artifact key: the 805 davinci003 references are scored once per machine.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CorruptFileError
from ..utils import atomic_write, cache_dir, digest, stable_hash
from .encoder import EmbeddingCache, encoder_path, text_digest
from .features import HAND_FEATURES, full_prompt, hand_features
from .files import move_aside
from .heads import feature_scale, fit_bt_head
from .training_data import labels, load_training_pairs

logger = logging.getLogger(__name__)

BEST_FORMAT = 1


@dataclass
class CrossEncoderConfig:
    """What determines a trained ``best`` judge (its cache key). ``max_steps`` of ``batch_pairs`` pairs each."""

    variant: str = "best"
    max_length: int = 192  # word pieces of (prompt, output); the probe's setting
    batch_pairs: int = 16
    max_steps: int = 2000  # about 2 epochs over the 21 models' 16.9k pairs
    encoder_lr: float = 3e-5
    head_lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    l2_init: float = 3e-3  # L2 of the hand-feature regression that initialises the head
    # bf16 autocast: the probe's setting, but on CPUs without native bf16 it is far slower (measured here: a 32 x 192
    # backward pass 97 s in bf16 vs 2.6 s in fp32), so fp32 is the default
    bf16: bool = False
    n_bootstrap: int = 4
    n_pool_pairs: int = 512
    seed: int = 0
    models: tuple[str, ...] | None = None
    max_pairs_per_model: int | None = None

    def key(self) -> str:
        return digest({"format": BEST_FORMAT, **dataclasses.asdict(self)})[:16]


def artifact_dir(config: CrossEncoderConfig) -> Path:
    return cache_dir("judge", "artifacts", f"distilled_best_{config.key()}")


def _hand(rows_prompts: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
    if not len(outputs):
        return np.zeros((0, len(HAND_FEATURES)), np.float32)
    return np.stack([hand_features(p, o) for p, o in zip(rows_prompts, outputs)]).astype(np.float32)


class CrossEncoderScorer:
    """MiniLM + mean pooling + a linear map to one number (the encoder term of ``s``)."""

    def __init__(self, max_length: int, state: dict | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = encoder_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.encoder = AutoModel.from_pretrained(str(path))
        self.proj = torch.nn.Linear(self.encoder.config.hidden_size, 1, bias=False)  # no bias: cancels in s2 - s1
        torch.nn.init.zeros_(self.proj.weight)
        self.max_length = max_length
        if state is not None:
            self.encoder.load_state_dict(state["encoder"])
            self.proj.load_state_dict(state["proj"])

    def parameters(self):
        return list(self.encoder.parameters()) + list(self.proj.parameters())

    def state(self) -> dict:
        return {"encoder": self.encoder.state_dict(), "proj": self.proj.state_dict()}

    def forward(self, prompts: Sequence[str], outputs: Sequence[str], bf16: bool):
        import torch

        enc = self.tokenizer(list(prompts), list(outputs), padding=True, truncation="longest_first",
                             max_length=self.max_length, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = self.encoder(**enc).last_hidden_state
        hidden = hidden.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.proj(pooled).squeeze(-1)


def init_hand_head(prompts1, outs1, prompts2, outs2, y, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """(scale, w): the hand-feature Bradley-Terry regression that initialises the head."""

    h1, h2 = _hand(prompts1, outs1), _hand(prompts2, outs2)
    scale = feature_scale(h1, h2)
    return scale, fit_bt_head((h2 - h1) / scale, y, l2)


def _save_atomic(obj: Any, path: Path) -> None:
    import torch


    atomic_write(path, lambda f: torch.save(obj, f))  # a kill mid-write leaves the previous checkpoint intact


# What torch.load raises for a truncated or garbage file ("PytorchStreamReader failed reading zip archive" is a
# RuntimeError); only caught around the load of one of this module's own files.
_TORCH_LOAD_ERRORS = (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile)


def _load_torch_file(path: Path, what: str, keys: Sequence[str]) -> dict:
    """``torch.load(path)``, a dict with ``keys``; else :class:`CorruptFileError` naming the file."""
    import torch

    try:
        obj = torch.load(path, weights_only=False)
    except _TORCH_LOAD_ERRORS as e:
        raise CorruptFileError(path, f"not a readable {what} (truncated or not a torch file: {type(e).__name__}: {e})") from e
    missing = [k for k in keys if k not in obj] if isinstance(obj, dict) else list(keys)
    if missing:
        raise CorruptFileError(path, f"not a {what}: no {', '.join(missing)}")
    return obj


@dataclass
class _Pairs:
    """The training pairs as the loop reads them: prompts, both outputs, Bradley-Terry targets and scaled hand
    features of each output (torch tensors)."""

    prompts: list[str]
    o1: list[str]
    o2: list[str]
    y: np.ndarray
    h1: Any = None
    h2: Any = None


@dataclass
class _Run:
    """The state of a training run, saved in each checkpoint: the encoder and its projection, the hand weights,
    their feature scale, the optimizer, the steps done and the loss of each step."""

    scorer: CrossEncoderScorer
    hand_w: Any  # torch.nn.Parameter
    scale: np.ndarray
    step: int
    losses: list[float]
    opt: Any = None  # torch.optim.AdamW
    stopped_early: bool = False


def train_best(
    config: CrossEncoderConfig,
    data_dir: str | os.PathLike | None = None,
    *,
    rows: Sequence[dict] | None = None,
    checkpoint_every: int = 50,
    time_budget_s: float | None = None,
    stop_after_steps: int | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) the cross-encoder for ``config``; write ``model.pt`` + ``meta.json``; return the folder.

    ``time_budget_s`` ends training early (the artifact records the steps actually done). ``stop_after_steps``
    stops after that many steps *without* finalising (leaves only the checkpoint: a simulated kill, for tests).
    """
    import torch

    t0 = time.time()
    out = artifact_dir(config)
    ckpt_path = out / "checkpoint.pt"
    rows = list(rows) if rows is not None else load_training_pairs(data_dir, config.models, config.max_pairs_per_model)
    prompts = [full_prompt(r["instruction"], r.get("input", "") or "") for r in rows]
    data = _Pairs(prompts, [r["output_1"] for r in rows], [r["output_2"] for r in rows], labels(rows))
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    run, ck = _start_or_resume(config, ckpt_path, data)
    resumed_from = run.step
    data.h1 = torch.as_tensor(_hand(data.prompts, data.o1) / run.scale)
    data.h2 = torch.as_tensor(_hand(data.prompts, data.o2) / run.scale)
    run.opt = _optimizer(config, run, ck)
    if not _train_steps(config, run, data, ckpt_path, t0, checkpoint_every, time_budget_s, stop_after_steps,
                        progress):
        return out
    run.scorer.encoder.eval()
    heads = _pool_heads(config, run, data)
    _save_atomic({"scorer": run.scorer.state(), "scale": run.scale, "heads": np.stack(heads)}, out / "model.pt")
    losses = run.losses
    meta = {"config": dataclasses.asdict(config), "key": config.key(), "n_pairs": len(rows), "steps": run.step,
            "resumed_from_step": resumed_from, "stopped_early": run.stopped_early,
            "final_loss_50": float(np.mean(losses[-50:])) if losses else None,
            "models": sorted({r["model"] for r in rows}), "train_seconds_last_run": round(time.time() - t0, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write(out / "meta.json", lambda f: f.write(json.dumps(meta, indent=2).encode("utf-8")))
    return out


def _start_or_resume(config: CrossEncoderConfig, ckpt_path: Path, data: _Pairs) -> tuple[_Run, dict | None]:
    """The run resumed from the checkpoint at ``ckpt_path`` (returned too), or a fresh one: the encoder term at zero
    and the hand weights from the hand-feature Bradley-Terry regression (``init_hand_head``)."""
    import torch

    ck = None
    if ckpt_path.is_file():
        try:
            ck = _load_torch_file(ckpt_path, "training checkpoint",
                                  ("scorer", "scale", "step", "hand_w", "opt", "losses"))
        except CorruptFileError as e:  # a truncated checkpoint: moved aside (warning), training starts over
            move_aside(ckpt_path, e)
    if ck is not None:
        scorer = CrossEncoderScorer(config.max_length, ck["scorer"])
        scale, step = ck["scale"], int(ck["step"])
        hand_w = torch.nn.Parameter(torch.as_tensor(ck["hand_w"]))
        logger.info("resuming the best judge from step %d (%s)", step, ckpt_path)
    else:
        scorer = CrossEncoderScorer(config.max_length)
        scale, w0 = init_hand_head(data.prompts, data.o1, data.prompts, data.o2, data.y, config.l2_init)
        hand_w = torch.nn.Parameter(torch.as_tensor(w0, dtype=torch.float32))
        step = 0
    return _Run(scorer, hand_w, scale, step, list(ck["losses"]) if ck is not None else []), ck


def _optimizer(config: CrossEncoderConfig, run: _Run, ck: dict | None):
    """AdamW over the encoder (``encoder_lr``, weight decay) and the head (``head_lr``); a resumed run gets its
    optimizer state back, and the torch RNG, so that dropout masks continue exactly where the killed run stopped."""
    import torch

    opt = torch.optim.AdamW([
        {"params": list(run.scorer.encoder.parameters()), "lr": config.encoder_lr,
         "weight_decay": config.weight_decay},
        {"params": list(run.scorer.proj.parameters()) + [run.hand_w], "lr": config.head_lr, "weight_decay": 0.0},
    ])
    if ck is not None:
        opt.load_state_dict(ck["opt"])
        if ck.get("torch_rng") is not None:
            torch.set_rng_state(ck["torch_rng"])
    return opt


def _batch_at(config: CrossEncoderConfig, n: int, s: int) -> np.ndarray:
    """The pairs of step ``s``: one seeded permutation per epoch (numpy Generator on (seed, epoch)), so a resumed
    run replays the order."""
    per_epoch = max(1, n // config.batch_pairs)
    epoch, j = divmod(s, per_epoch)
    perm = np.random.default_rng([config.seed, epoch]).permutation(n)
    return perm[j * config.batch_pairs : (j + 1) * config.batch_pairs]


def _train_steps(config: CrossEncoderConfig, run: _Run, data: _Pairs, ckpt_path: Path, t0: float,
                 checkpoint_every: int, time_budget_s: float | None, stop_after_steps: int | None,
                 progress: bool) -> bool:
    """Bradley-Terry steps (linear warm-up, gradients clipped at 1) until ``max_steps`` or the time budget, with a
    checkpoint every ``checkpoint_every`` steps. Returns False when stopped by ``stop_after_steps`` (a simulated
    kill: the checkpoint is written, nothing is finalised)."""
    import torch

    base_lrs = [config.encoder_lr, config.head_lr]
    run.scorer.encoder.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.max_steps, initial=run.step, desc="fine-tuning best judge", unit="step")
    steps_this_run = 0
    while run.step < config.max_steps:
        if time_budget_s is not None and time.time() - t0 > time_budget_s:
            run.stopped_early = True
            break
        idx = _batch_at(config, len(data.prompts), run.step)
        warm = min(1.0, (run.step + 1) / max(1, config.warmup_steps))
        for g, lr in zip(run.opt.param_groups, base_lrs):
            g["lr"] = lr * warm
        p = [data.prompts[i] for i in idx]
        s = run.scorer.forward(p + p, [data.o1[i] for i in idx] + [data.o2[i] for i in idx], config.bf16)
        k = len(idx)
        diff = (s[k:] - s[:k]) + (data.h2[idx] - data.h1[idx]) @ run.hand_w
        loss = torch.nn.functional.binary_cross_entropy_with_logits(diff, torch.as_tensor(data.y[idx],
                                                                                          dtype=torch.float32))
        run.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.scorer.parameters() + [run.hand_w], 1.0)
        run.opt.step()
        run.step += 1
        steps_this_run += 1
        run.losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(run.losses[-50:]):.3f}")
        killed = stop_after_steps is not None and steps_this_run >= stop_after_steps
        if run.step % checkpoint_every == 0 or killed:
            _save_atomic({"scorer": run.scorer.state(), "hand_w": run.hand_w.detach().numpy(), "scale": run.scale,
                          "opt": run.opt.state_dict(), "step": run.step, "losses": run.losses,
                          "torch_rng": torch.get_rng_state()}, ckpt_path)
        if killed:
            if bar is not None:
                bar.close()
            return False
    if bar is not None:
        bar.close()
    return True


def _pool_heads(config: CrossEncoderConfig, run: _Run, data: _Pairs) -> list[np.ndarray]:
    """Head 0 (encoder weight 1, the trained hand weights) and the pool members' heads: ``a_h * s_enc + w_h . hand``,
    refitted on bootstrap resamples of a fixed subset of ``n_pool_pairs`` training pairs."""
    import torch

    n = len(data.prompts)
    sub = np.asarray(sorted(range(n), key=lambda i: stable_hash("pool", config.seed, i))[: config.n_pool_pairs])
    with torch.inference_mode():
        se = np.concatenate([
            run.scorer.forward([data.prompts[i] for i in sub[b : b + 32]] * 2,
                               [data.o1[i] for i in sub[b : b + 32]] + [data.o2[i] for i in sub[b : b + 32]],
                               config.bf16)
            .reshape(2, -1).numpy().T for b in range(0, len(sub), 32)
        ]) if len(sub) else np.zeros((0, 2))
    d = np.concatenate([(se[:, 1] - se[:, 0])[:, None], (data.h2[sub] - data.h1[sub]).numpy()], axis=1)
    heads = [np.concatenate([[1.0], run.hand_w.detach().numpy()]).astype(np.float32)]
    for h in range(1, config.n_bootstrap + 1):
        rng = np.random.default_rng(config.seed * 1000 + h)
        wgt = np.bincount(rng.integers(0, len(sub), len(sub)), minlength=len(sub)).astype(float)
        heads.append(fit_bt_head(d, data.y[sub], config.l2_init, wgt))
    return heads


class BestJudgeModel:
    """A trained ``best`` artifact: per-output encoder scores (cached) + head ``h``'s hand weights."""

    def __init__(self, folder: Path, bf16: bool = False, score_cache: EmbeddingCache | None = None):
        self.folder = Path(folder)
        ck = _load_torch_file(self.folder / "model.pt", "best-judge model", ("scorer", "scale", "heads"))
        meta_path = self.folder / "meta.json"
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            self.max_length = int(self.meta["config"]["max_length"])
            # the artifact key (config + steps actually trained) names the cached scores
            self.key = digest({"config": self.meta["config"], "steps": self.meta["steps"],
                               "built": self.meta["built_at"]})[:16]
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptFileError(meta_path, f"not a readable best-judge meta file ({type(e).__name__}: {e})") from e
        self.scorer = CrossEncoderScorer(self.max_length, ck["scorer"])
        self.scorer.encoder.eval()
        self.scale = np.asarray(ck["scale"], np.float32)
        self.heads = np.asarray(ck["heads"], np.float32)
        self.bf16 = bf16
        self.cache = score_cache or EmbeddingCache(cache_dir("judge", "embeddings") / "best_scores.sqlite")
        self.n_scored = 0  # texts run through the encoder (not from cache)

    def encoder_scores(self, prompts: Sequence[str], outputs: Sequence[str], progress: bool = False,
                       batch_size: int = 32) -> np.ndarray:
        import torch

        tag = f"best|{self.key}|{self.max_length}"
        keys = [text_digest(p + "\x00" + o, tag) for p, o in zip(prompts, outputs)]
        found = self.cache.get_many(keys)
        missing = list(dict.fromkeys((k, p, o) for k, p, o in zip(keys, prompts, outputs) if k not in found))
        missing.sort(key=lambda t: -(len(t[1]) + len(t[2])))  # similar lengths per batch: less padding
        batches = [missing[i : i + batch_size] for i in range(0, len(missing), batch_size)]
        it = batches
        if progress and batches:
            from tqdm.auto import tqdm

            it = tqdm(batches, desc="scoring (best judge)", unit="batch")
        for b in it:
            with torch.inference_mode():
                s = self.scorer.forward([t[1] for t in b], [t[2] for t in b], self.bf16).float().numpy()
            new = {t[0]: np.asarray([v], np.float32) for t, v in zip(b, s)}
            self.cache.put_many(new)
            found.update(new)
            self.n_scored += len(b)
        return np.asarray([float(found[k][0]) for k in keys], np.float64)

    def scores(self, instructions, inputs, outputs, head: int = 0, progress: bool = False) -> np.ndarray:
        prompts = [full_prompt(i, x or "") for i, x in zip(instructions, inputs)]
        se = self.encoder_scores(prompts, list(outputs), progress=progress)
        hw = self.heads[head].astype(np.float64)
        hand = _hand(prompts, list(outputs)).astype(np.float64) / self.scale
        return hw[0] * se + hand @ hw[1:]


BEST_BUILD_COUNT = 0  # trainings finished in this process (tests check that a cached artifact is reused)


def get_best_model(config: CrossEncoderConfig | None = None, data_dir=None, *, retrain: bool = False,
                   progress: bool = True, **train_kw) -> BestJudgeModel:
    """Load the cached ``best`` artifact for ``config``; else train it (resuming any checkpoint) and cache it."""
    global BEST_BUILD_COUNT
    config = config or CrossEncoderConfig()
    folder = artifact_dir(config)
    if retrain:
        for f in ("model.pt", "meta.json", "checkpoint.pt"):
            (folder / f).unlink(missing_ok=True)
    elif (folder / "model.pt").is_file():
        try:
            return BestJudgeModel(folder, bf16=config.bf16)
        except CorruptFileError as e:  # a truncated model.pt or meta.json: moved aside (warning) and built again,

            move_aside(Path(e.path), e)
    logger.info("training the best distilled judge; cached at %s", folder)
    train_best(config, data_dir, progress=progress, **train_kw)
    BEST_BUILD_COUNT += 1
    return BestJudgeModel(folder, bf16=config.bf16)
