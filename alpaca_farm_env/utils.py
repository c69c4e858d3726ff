"""Small helpers shared across the package: stable hashing, cache dirs, seeding."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import inspect
import json
import math
import os
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

import numpy as np


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: Any) -> Any:
    """``text`` with every code point UTF-8 cannot encode (a surrogate, U+D800..U+DFFF) resolved, so that it can be
    hashed, tokenized, embedded and stored; any other value is returned as is.

    The rule, applied by every annotator to its texts before judging them: a high surrogate directly followed by a
    low one becomes the character the pair encodes (as UTF-16 reads it: ``"\\ud83d\\ude00"`` -> U+1F600), and every
    other (lone) surrogate becomes one U+FFFD REPLACEMENT CHARACTER (``"caf\\udce9"`` -> ``"caf\\ufffd"``). Such code
    points come from ``errors="surrogateescape"`` decoding of undecodable bytes or from a JSON escape such as
    ``"\\ud800"``. Text without surrogates is returned unchanged (the same object).
    """
    if not isinstance(text, str) or text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def decode_error_text(err: UnicodeDecodeError) -> str:
    """A one-line description of a file that is not UTF-8, for the error naming the file: the first bad byte, its
    byte offset in the file and why, e.g. ``not UTF-8 text: byte 0xe9 at offset 9 (invalid continuation byte); save
    the file as UTF-8``."""
    bad = err.object[err.start : err.start + 1]
    byte = f"byte 0x{bad[0]:02x}" if bad else "the end"
    return f"not UTF-8 text: {byte} at offset {err.start} ({err.reason}); save the file as UTF-8"


def stable_hash(*parts: Any) -> int:
    """A 32-bit integer from an md5 of the parts; identical across processes (unlike the salted ``hash()``).
    Surrogates are hashed as :func:`clean_text` resolves them."""
    text = clean_text("".join(str(p) for p in parts))
    return int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) % (2**32)


def random_seeded_choice(seed: Any, choices: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
    """Pick one of ``choices`` deterministically from a string seed.

    Same construction as alpaca_eval's ``utils.random_seeded_choice``: md5 of the seed string -> numpy Generator.
    """
    rng = np.random.default_rng(stable_hash(seed))
    p = None if weights is None else np.asarray(weights, dtype=float) / float(np.sum(weights))
    idx = rng.choice(len(choices), p=p)
    return list(choices)[int(idx)]


def digest(obj: Any) -> str:
    """sha256 hex digest of a JSON-serialisable object (sorted keys), for cache keys. Surrogates in its strings are
    hashed as :func:`clean_text` resolves them."""
    text = clean_text(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats (e.g. an undefined standard error) by None, recursively, for strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def accepts_kwarg(factory: Any, name: str) -> bool:
    """Whether ``factory(name=...)`` is accepted (a parameter of that name, or ``**kwargs``); True when unknowable."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def cache_dir(*sub: str) -> Path:
    """Per-user cache dir: $ALPACA_FARM_CACHE, else $XDG_CACHE_HOME/alpaca_farm_env, else ~/.cache/alpaca_farm_env."""
    root = os.environ.get("ALPACA_FARM_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alpaca_farm_env"
    path = base.joinpath(*sub)
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # torch is a hard dependency, but keep data-only use importable
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """``write(f)`` into a uniquely named temp file beside ``path``, fsync, then rename onto ``path``.

    A crash never leaves a half-written file, two processes writing the same path never share a temp file, and the
    temp file is removed if anything fails. The last writer wins; wrap a read-modify-write in :func:`file_lock` so
    that no writer's rows are lost.
    """
    from .errors import DataNotFoundError

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file path", str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataNotFoundError(f"{path.parent}: exists and is not a directory (needed to write {path.name})") from None
    except NotADirectoryError:
        raise DataNotFoundError(f"{path.parent}: a parent of this path is a file, not a directory") from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; give it the mode an ordinary write would have (or keep the old file's)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text; surrogates, which UTF-8 cannot encode, are written as :func:`clean_text`
    resolves them."""
    atomic_write(path, lambda f: f.write(clean_text(text).encode("utf-8")))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float = 600.0, busy: str = "") -> Iterator[None]:
    """Exclusive inter-process lock for a read-modify-write of ``path`` (an advisory lock on ``<path>.lock``).

    Every writer of a shared file (the leaderboard, an annotations cache) takes it, so two runs finishing together
    both keep their rows. Raises :class:`~alpaca_farm_env.errors.FileLockTimeout` after ``timeout`` seconds, with
    ``busy`` as the message when given. The lock dies with its process, so a killed run never leaves it held.
    """
    from .errors import FileLockTimeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + timeout
    with open(lock_path, "a+b") as f:
        while True:
            try:
                _lock_fd(f.fileno())
                break
            except (BlockingIOError, PermissionError):
                if time.monotonic() > deadline:
                    raise FileLockTimeout(busy or f"{lock_path}: still locked by another process after "
                                          f"{timeout:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            _unlock_fd(f.fileno())


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
