"""Shared test setup: point the data loader at the offline data copy beside the checkout (../shared/data)."""
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
