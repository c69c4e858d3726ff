"""Experiment tracking beside ``metrics.csv``: every training stage and method takes ``report_to``, as TRL's
``TrainingArguments.report_to`` does (``"none"``, ``"tensorboard"`` or ``"wandb"``; ``"none"`` by default, so only the
CSV files are written).

* The loops written here (the SFT loop, the RL trainer) log through Accelerate's trackers (huggingface/accelerate
  ``src/accelerate/tracking.py``, ``TensorBoardTracker`` and ``WandBTracker``): :func:`tracked` starts them for one
  training run and yields the function that logs a row of metrics at a step, with the names of ``metrics.csv``.
* The TRL-backed stages (DPO, the reward model) pass ``report_to`` to TRL; :func:`trl_tracking` points TRL's
  TensorBoard callback at the same folder and starts the Weights & Biases run that TRL's callback then logs to.

TensorBoard event files go to ``<output_dir>/runs/<run name>`` (:func:`log_dir`), so ``tensorboard --logdir`` over a
benchmark's run dir shows every stage and method. A resumed run hides the events of the steps it redoes, as
``metrics.csv`` drops their rows (``SummaryWriter(purge_step=...)``). Weights & Biases writes to the project of
``WANDB_PROJECT`` (default ``alpaca-farm-env``), under ``<output_dir>/runs``, and offline (``WANDB_MODE=offline``,
synced later with ``wandb sync``) unless ``WANDB_MODE`` is set or an API key is configured (``WANDB_API_KEY`` or
``wandb login``): a run on a machine without an account or a network never blocks on a login prompt.

Tracking never changes what a run computes: :func:`untracked` drops ``report_to`` from every config that keys a cache,
a run dir or a resumable output dir, so turning it on or off reuses the same results.
"""
from __future__ import annotations

import contextlib
import importlib.util
import netrc
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

__all__ = ["LOG_DIR", "REPORT_TO", "check_report_to", "log_dir", "tracked", "trl_tracking", "untracked"]

REPORT_TO = ("none", "tensorboard", "wandb")
"""The values ``report_to`` takes."""
LOG_DIR = "runs"
"""The folder (in a training run's ``output_dir``) of its TensorBoard event files and Weights & Biases run."""
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
WANDB_PROJECT = "alpaca-farm-env"

Log = Callable[[Mapping[str, Any], int], None]


def check_report_to(value: Any, *, installed: bool = False) -> list[str]:
    """Returns the trackers ``value`` names (``"none"``: ``[]``). Raises ``ValueError`` for any other value than those
    of :data:`REPORT_TO` and, with ``installed``, ``ImportError`` naming the ``pip install`` line when the tracker's
    package is missing."""
    if not isinstance(value, str) or value not in REPORT_TO:
        raise ValueError(f"report_to: unknown tracker {value!r}; choose one of {', '.join(map(repr, REPORT_TO))}")
    names = [] if value == "none" else [value]
    for name in names if installed else []:
        if not any(_installed(p) for p in _PACKAGES[name]):
            raise ImportError(f"report_to={name!r} needs the {name} package, which is not installed: "
                              f"pip install {name}")
    return names


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a module entry set to None (an import blocked) or without a spec
        return False


def log_dir(output_dir: str | os.PathLike) -> Path:
    """Returns ``<output_dir>/runs``: where a training run's trackers write."""
    return Path(output_dir) / LOG_DIR


def untracked(obj: Any) -> Any:
    """Returns ``obj`` without the ``report_to`` keys of its mappings, at any depth (lists and tuples become lists):
    what a cache, run-dir or output-dir key digests, so that tracking never changes a key."""
    if isinstance(obj, Mapping):
        return {k: untracked(v) for k, v in obj.items() if k != "report_to"}
    if isinstance(obj, (list, tuple)):
        return [untracked(v) for v in obj]
    return obj


def _wandb_kwargs(output_dir: str | os.PathLike, run_name: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``wandb.init`` arguments of a run: its name, config and folder, and offline mode when neither
    ``WANDB_MODE`` nor an API key (the ``WANDB_API_KEY`` variable, or ``wandb login``'s entry in ``~/.netrc``) is
    set. Passed as arguments, not environment variables: ``wandb`` reads those once per process."""
    folder = log_dir(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"name": run_name, "dir": str(folder), "config": dict(untracked(config or {}))}
    if not os.environ.get("WANDB_MODE") and not os.environ.get("WANDB_API_KEY") and not _netrc_login():
        kwargs["mode"] = "offline"
    return kwargs


def _netrc_login() -> bool:
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set the environment variables ``values`` for the block; the previous values come back after it."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def tracked(report_to: str, output_dir: str | os.PathLike, run_name: str, *, config: Mapping[str, Any] | None = None,
            step: int = 0, accelerator: Any = None) -> Iterator[Log]:
    """Start Accelerate's trackers for one training run in ``output_dir`` (TensorBoard in ``<output_dir>/runs/
    <run_name>``, a Weights & Biases run named ``run_name`` with ``config`` as its config) and yield ``log(values,
    step)``, which logs the numbers of ``values`` at ``step``; the trackers are finished after the block. ``step``: the
    step a resumed run restarts after (TensorBoard hides the events logged after it).

    With an ``accelerator``, the trackers start on the main process only and join ``accelerator.trackers`` for the
    block, and ``log`` is ``accelerator.log``, so the accelerator's own trackers (``Accelerator(log_with=...)`` and
    ``init_trackers``) receive the metrics too. ``accelerator.end_training()`` is not called: it also destroys the
    process group, which later fits in the same process still use."""
    names = check_report_to(report_to, installed=True)
    trackers = _start(names, output_dir, run_name, config, step) if accelerator is None or \
        accelerator.is_main_process else []

    def log(values: Mapping[str, Any], at: int) -> None:
        numbers = {k: float(v) for k, v in values.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if accelerator is not None:
            accelerator.log(numbers, step=at)
        else:
            for t in trackers:
                t.log(numbers, step=at)

    if accelerator is not None:
        accelerator.trackers.extend(trackers)
    try:
        yield log
    finally:
        for t in trackers:
            t.finish()
            if accelerator is not None:
                accelerator.trackers.remove(t)


def _start(names: list[str], output_dir: str | os.PathLike, run_name: str, config: Mapping[str, Any] | None,
           step: int) -> list[Any]:
    """Accelerate's trackers for ``names``, started. Returns them."""
    from accelerate import PartialState
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    PartialState()  # the trackers log through Accelerate's logger, which needs the process state (one process here)
    out: list[Any] = []
    for name in names:
        if name == "tensorboard":
            # purge_step: TensorBoard drops the events of steps >= it logged by a run killed after its checkpoint
            tracker = TensorBoardTracker(run_name, log_dir(output_dir), **({"purge_step": step + 1} if step else {}))
        else:
            tracker = WandBTracker(os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
                                   **_wandb_kwargs(output_dir, run_name, config))
        tracker.start()
        out.append(tracker)
    return out


@contextlib.contextmanager
def trl_tracking(report_to: str, output_dir: str | os.PathLike, run_name: str,
                 resume_from: str | None = None) -> Iterator[list[str] | str]:
    """A TRL trainer's tracking for the block (its construction and ``train``): TRL's ``TensorBoardCallback`` writes
    to ``<output_dir>/runs/<run_name>`` (``TENSORBOARD_LOGGING_DIR``, set for the block); for Weights & Biases, the
    run of the module docstring is started on the main process (TRL's ``WandbCallback`` logs to an active run rather
    than start its own) and finished after the block. Yields the value of the trainer's ``report_to`` (``"none"``, or
    the list of trackers). ``resume_from``: the Trainer checkpoint the run resumes from (``checkpoint-<step>``);
    TensorBoard hides the events logged after it."""
    names = check_report_to(report_to, installed=True)
    env: dict[str, str] = {}
    folder = log_dir(output_dir) / run_name
    main = _is_main_process() if names else False  # TRL's callbacks write on the main process only
    if "tensorboard" in names:
        env["TENSORBOARD_LOGGING_DIR"] = str(folder)
        done = re.search(r"checkpoint-(\d+)$", str(resume_from or ""))
        if done and main:  # an event file whose purge marker hides the events logged after the checkpoint
            from torch.utils.tensorboard import SummaryWriter

            SummaryWriter(str(folder), purge_step=int(done.group(1)) + 1).close()
    runs = _start(["wandb"], output_dir, run_name, None, 0) if "wandb" in names and main else []
    try:
        with _environment(env):
            yield names or "none"
    finally:
        for run in runs:
            run.finish()


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process
