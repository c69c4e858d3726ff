"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a page missing from the nav, an API
reference that does not resolve: each is a warning, and strict mode turns warnings into a failed build), and the built
site holds the quickstart, the charts and the API reference generated from the package's docstrings."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_strict_build(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=REPO,
                          capture_output=True, text=True, timeout=900, env={"NO_MKDOCS_2_WARNING": "1",
                                                                          "PATH": str(Path(sys.executable).parent)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    quickstart = (site / "index.html").read_text(encoding="utf-8")
    assert "Quickstart" in quickstart and 'src="img/cpu_all/results.png"' in quickstart
    charts = site / "img" / "cpu_all"
    assert (charts / "results.png").stat().st_size > 1000 and (charts / "selection-quark.png").stat().st_size > 1000
    envs_api = (site / "api" / "envs" / "index.html").read_text(encoding="utf-8")
    assert "AlpacaFarmEnvBase" in envs_api and "EpisodeConfig" in envs_api  # mkdocstrings rendered the classes
    for page in ("envs", "rewards", "annotators", "methods", "benchmark", "judge", "scale-out"):
        assert (site / page / "index.html").is_file(), page
