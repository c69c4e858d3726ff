"""Shared test setup: point the data loader at the offline data copy beside the checkout (../shared/data).

The folders mirror the package (``envs/``, ``rewards/``, ``annotators/``, ``judge/``, ``rl/``, ``agents/``,
``benchmark/``, ``data/``, ``models/``, ``cli/``); ``cross_cutting/`` holds suites that span it (input errors, corrupt
files, concurrency, unicode, the registry, import cost) and ``docs/`` runs the documentation's examples. Tests that
train, build a judge or run end to end are marked ``slow``: ``make test-fast`` runs the rest.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_default = REPO.parent / "shared" / "data"
if not os.environ.get("ALPACA_FARM_DATA_DIR") and (_default / "README.md").is_file():
    os.environ["ALPACA_FARM_DATA_DIR"] = str(_default)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("ALPACA_FARM_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.fail("the tests need the AlpacaFarm data: set ALPACA_FARM_DATA_DIR (CI uses ../shared/data)")
    return Path(value)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny-model tests: a 2-layer model gains nothing from two, and on a busy
    2-core machine two threads spin-wait. Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
