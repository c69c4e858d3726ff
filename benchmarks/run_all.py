"""Run every ``benchmarks/bench_p*.py`` (each in its own process) and write ``benchmarks/RESULTS.md``: the machine,
the date, and each figure beside its target. Each script prints its own ratios, measured in one process; nothing here
is a test and nothing asserts a speed.

    python benchmarks/run_all.py [--quick] [--only p1,p3] [--out benchmarks/RESULTS.md]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        kb = next(int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal"))
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    versions = subprocess.run([sys.executable, "-c", "import torch, transformers, gymnasium; print(torch.__version__, "
                               "transformers.__version__, gymnasium.__version__, torch.get_num_threads())"],
                              capture_output=True, text=True).stdout.split()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "torch": versions[0] if versions else "?", "transformers": versions[1] if len(versions) > 1 else "?",
            "gymnasium": versions[2] if len(versions) > 2 else "?",
            "torch_threads": versions[3] if len(versions) > 3 else "?", "platform": platform.platform()}


def write_results(results: list[dict], info: dict, out: Path, quick: bool, command: str, total_s: float) -> None:
    lines = [
        "# Performance figures (issue 12)", "",
        f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `{command}` in {total_s / 60:.1f} min"
        + (" -- **quick mode: tiny sizes, development numbers, not the figures**" if quick else "") + ".", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory']} memory; Python {info['python']}, "
        f"torch {info['torch']} ({info['torch_threads']} threads), transformers {info['transformers']}, "
        f"gymnasium {info['gymnasium']}; {info['platform']}.", "",
        "Each figure is measured in one process, both sides back to back, several repeats, the median "
        "(see each script's docstring). Rerun one with `python benchmarks/<script> [--quick]`.", "",
        "| id | figure | measured | target | met | details | script |", "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['item']} | (failed) | | | no | {r['error'][-300:]} | `{r['script']}` |")
            continue
        for f in r["figures"]:
            unit = f["unit"]
            lines.append(f"| {f['id']} | {f['name']} | {f['value']:.3g}{unit} | {f['op']} {f['target']:g}{unit} | "
                         f"{'yes' if f['met'] else '**no**'} | {f['detail']} | `{r['script']}` ({r['seconds']} s) |")
    lines += ["", "What each figure means, what changed it and what is not ours: "
              "[docs/performance.md](../docs/performance.md)."]
    out.write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated prefixes, e.g. p1,p3")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    scripts = sorted(HERE.glob("bench_p*.py"))
    if args.only:
        keep = tuple(f"bench_{p.strip().lower()}" for p in args.only.split(","))
        scripts = [s for s in scripts if s.name.startswith(keep)]
    if not scripts:
        print("no benchmarks found")
        return 1
    t0 = time.perf_counter()
    info = machine()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for script in scripts:
            print(f"== {script.name}", flush=True)
            js = Path(tmp) / f"{script.stem}.json"
            cmd = [sys.executable, str(script), "--json", str(js)] + (["--quick"] if args.quick else [])
            proc = subprocess.run(cmd, cwd=HERE)
            if proc.returncode == 0 and js.is_file():
                r = json.loads(js.read_text())
            else:
                r = {"item": script.stem, "error": f"exit status {proc.returncode}", "figures": []}
            r["script"] = f"benchmarks/{script.name}"
            results.append(r)
    total = time.perf_counter() - t0
    command = "make bench" + (" BENCH_ARGS=--quick" if args.quick else "")
    write_results(results, info, Path(args.out), args.quick, command, total)
    print(f"wrote {args.out} ({total / 60:.1f} min)")
    return 0 if all(not r.get("error") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
