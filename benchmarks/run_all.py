"""Run every ``benchmarks/bench_*.py`` in turn. Each prints its own ratios against a baseline measured in the
same process; nothing here is a test and nothing asserts a speed."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    scripts = sorted(here.glob("bench_*.py"))
    if not scripts:
        print("no benchmarks found")
        return 1
    for script in scripts:
        print(f"== {script.name}", flush=True)
        runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
