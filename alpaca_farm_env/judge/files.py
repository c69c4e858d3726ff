"""Reading and caching the judge's artifact files: an unreadable cached file is moved aside and rebuilt, an
unreadable packaged one is an error naming it. ``BUILD_COUNT`` counts artifacts trained in this process (tests check
that a cached one is reused)."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import CorruptFileError
from ..utils import atomic_write

logger = logging.getLogger(__name__)

BUILD_COUNT = 0
PACKAGED_ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

# What np.load and the reads of an .npz raise for a truncated or garbage file (missing array: KeyError; bad meta JSON
# or a pickled file: ValueError; bad CRC: BadZipFile; an empty file: EOFError). OSError (permissions, a directory) is
# not corruption and propagates.
_NPZ_ERRORS = (ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


@contextlib.contextmanager
def _reading_npz(path: Path, what: str):
    """``np.load(path)``; any error of an unreadable file (while loading or reading arrays) -> CorruptFileError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z
    except _NPZ_ERRORS as e:
        raise CorruptFileError(path, f"not a readable {what} (truncated or not an .npz: {type(e).__name__}: {e})") from e


def move_aside(path: Path, err: Exception) -> Path:
    """Rename an unreadable cache file to ``<name>.corrupt`` (replacing an older one), with a warning naming it."""
    aside = path.with_name(path.name + ".corrupt")
    logger.warning("%s; moved it aside to %s and rebuilding it", err, aside)
    with contextlib.suppress(FileNotFoundError):  # another process moved it first
        os.replace(path, aside)
    return aside


def _load_cached(path: Path, load: Callable[[Path], Any]) -> Any | None:
    """``load(path)`` of a cached artifact; ``None`` when there is none or it was unreadable (then moved aside)."""
    if not path.is_file():
        return None
    try:
        return load(path)
    except CorruptFileError as e:
        move_aside(path, e)
        return None


def _load_packaged(path: Path, load: Callable[[Path], Any]) -> Any:
    """``load(path)`` of an artifact shipped in the package: never moved or rebuilt, an unreadable one is an error."""
    try:
        return load(path)
    except CorruptFileError as e:
        detail = str(e).removeprefix(f"{path}: ")
        raise CorruptFileError(path, f"the artifact shipped with the package is unreadable ({detail}); reinstall the "
                                     "package (pip install --force-reinstall alpaca-farm-env, or `git checkout` the "
                                     "file in a source checkout), or build your own with `alpaca-farm judge train "
                                     "--force`") from e


def _install_packaged(shipped: Path, path: Path, load: Callable[[Path], Any]) -> Any:
    """Check the shipped artifact loads, then copy it to the cache path ``path``; returns it loaded."""
    art = _load_packaged(shipped, load)
    with open(shipped, "rb") as src:
        atomic_write(path, lambda f: shutil.copyfileobj(src, f))
    return art
