"""docs/extending.md: every ```python block runs exactly as printed, each on its own (a fresh namespace, a temporary
working directory, the data dir in ``ALPACA_FARM_DATA_DIR``), and the example's own asserts are what is checked."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_page_has_examples_that_check_themselves():
    assert BLOCKS, f"no ```python block in {DOC}"
    for i, block in enumerate(BLOCKS, 1):
        assert re.search(r"^\s*assert ", block, flags=re.M), f"block {i} of {DOC.name} asserts nothing"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i + 1}")
def test_example_runs_as_printed(index, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALPACA_FARM_DATA_DIR", str(data_dir))
    # a fresh module, as ``python example.py`` would run it (dataclasses look their module up in sys.modules); the
    # block is compiled without this file's __future__ flags
    module = types.ModuleType(f"extending_example_{index + 1}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    code = compile(BLOCKS[index], f"{DOC.name} (python block {index + 1})", "exec", dont_inherit=True)
    exec(code, module.__dict__)  # an AssertionError here is the example's own
