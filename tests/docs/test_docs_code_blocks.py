"""Every code block of the documentation site runs, or says why it cannot.

The site is every page in ``mkdocs.yml``'s ``nav``. Every code block on it must be fenced with a language (an
indented or untagged block fails :func:`test_every_code_block_is_fenced_with_a_language`, which compares the fenced
blocks with the code blocks Markdown renders):

* ``python`` and ``bash`` blocks are code: :func:`test_page_runs` runs each page's code blocks in order, in one
  temporary working directory per page (a page is read top to bottom), with the data dir in
  ``ALPACA_FARM_DATA_DIR`` and this venv's ``bin`` first on ``PATH`` (``alpaca-farm``, ``accelerate``). A python block
  runs in a fresh ``python`` process; a bash block under ``bash -euo pipefail``. A block fails the test when it
  exits non-zero: its own ``assert`` statements are what it checks.
* ``text``, ``yaml``, ``ini``, ``toml``, ``json`` and ``mermaid`` blocks are not code (output, file layouts, configs,
  diagrams): never run.

An HTML comment on the line just above a code block's fence changes what happens to it:

* ``<!-- needs: gpu -->`` or ``<!-- needs: api-key -->``: not run (a CUDA GPU, a paid API key or a model server is
  not available to the tests). The comment is the reader's notice too.
* ``<!-- covered-by: tests/PATH.py -->``: not run here, because the named test runs the same thing (installing the
  package, a long training run); the file must exist.
* ``<!-- file: NAME -->``: the block is the content of the file ``NAME`` that a later block uses (for example a
  script that ``accelerate launch`` starts): it is written to the page's working directory, not run by itself.
* ``<!-- continues -->`` (python only): the block continues the page's previous python block, and runs after it in
  the same process, as a reader pastes one after the other.

Running a page imports torch and the package once per python block, so it takes seconds to minutes: it is marked slow.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
CODE = {"python", "bash"}
NOT_CODE = {"text", "yaml", "ini", "toml", "json", "mermaid"}
MARKER = re.compile(r"^<!--\s*(needs|covered-by|file|continues)\s*(?::\s*(\S.*?))?\s*-->$")
NEEDS = {"gpu", "api-key"}
FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: tuple[str, str | None] | None


def nav_pages() -> list[str]:
    """The Markdown files of ``mkdocs.yml``'s nav, relative to ``docs/``, in nav order."""

    def walk(node) -> list[str]:
        if isinstance(node, str):
            return [node] if node.endswith(".md") else []
        if isinstance(node, dict):
            return [p for v in node.values() for p in walk(v)]
        return [p for item in node for p in walk(item)]

    # mkdocs.yml uses the !!python/name tag for pymdownx's mermaid formatter; the nav is all this test reads
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    config = yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)
    return walk(config["nav"])


def parse(page: str) -> list[Block]:
    """The fenced blocks of ``docs/<page>`` (top-level fences: the site's pages do not nest code in lists)."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        assert j < len(lines), f"docs/{page}:{start + 1}: unclosed code fence"
        above = lines[start - 1].strip() if start > 0 else ""
        mm = MARKER.match(above)
        marker = (mm.group(1), mm.group(2)) if mm else None
        blocks.append(Block(page, start + 1, lang, "\n".join(lines[start + 1:j]) + "\n", marker))
        i = j + 1
    return blocks


PAGES = nav_pages()


def test_nav_pages_exist_and_every_page_is_in_the_nav():
    assert PAGES and len(set(PAGES)) == len(PAGES), PAGES
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(PAGES) == on_disk, f"nav and docs/ differ: {sorted(set(PAGES) ^ set(on_disk))}"


@pytest.mark.parametrize("page", PAGES)
def test_every_code_block_is_fenced_with_a_language(page):
    """Each block has a known language and a valid marker; and Markdown renders as many code blocks as there are
    fences, so no indented (unfenced) code block hides on the page."""
    import markdown

    blocks = parse(page)
    for b in blocks:
        where = f"docs/{page}:{b.line}"
        assert b.lang in CODE | NOT_CODE, f"{where}: fence language {b.lang!r}; use one of {sorted(CODE | NOT_CODE)}"
        if b.marker is None:
            continue
        kind, value = b.marker
        assert b.lang in CODE, f"{where}: a marker on a {b.lang!r} block, which is never run"
        if kind == "needs":
            assert value in NEEDS, f"{where}: needs {value!r}; use one of {sorted(NEEDS)}"
        elif kind == "covered-by":
            assert value and (REPO / value).is_file(), f"{where}: covered-by {value!r} is not a file of the repo"
        elif kind == "file":
            assert value and "/" not in value, f"{where}: file marker needs a plain file name, got {value!r}"
        else:
            assert b.lang == "python" and value is None, f"{where}: 'continues' takes no value and marks python blocks"
    html = markdown.markdown((DOCS / page).read_text(encoding="utf-8"),
                             extensions=["pymdownx.superfences", "md_in_html", "admonition", "attr_list", "tables"])
    rendered = html.count("<pre")
    assert rendered == len(blocks), (f"docs/{page}: Markdown renders {rendered} code blocks, {len(blocks)} are fenced: "
                                     "fence every code block (```python, ```bash, ```text, ...)")


def test_markers_are_used():
    """The markers above are the ones the site uses (a marker no page uses is a stale rule of this test)."""
    used = {b.marker[0] for p in PAGES for b in parse(p) if b.marker}
    assert {"needs", "covered-by", "file", "continues"} <= used, used


def run_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
    return env


def runnable(page: str) -> bool:
    """Whether the page has a code block that runs (not every one marked ``needs`` or ``covered-by``)."""
    return any(b.lang in CODE and (b.marker is None or b.marker[0] not in ("needs", "covered-by")) for b in parse(page))


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)])
def test_page_runs(page, data_dir, tmp_path):
    env = {**run_env(), "ALPACA_FARM_DATA_DIR": str(data_dir)}
    python_so_far = ""  # the page's previous python block (with what it continued), for <!-- continues -->
    ran = 0
    for i, b in enumerate(parse(page)):
        if b.lang not in CODE:
            continue
        kind, value = b.marker or (None, None)
        if kind in ("needs", "covered-by"):
            continue
        if kind == "file":
            (tmp_path / value).write_text(b.code, encoding="utf-8")
            continue
        if b.lang == "python":
            code = (python_so_far + b.code) if kind == "continues" else b.code
            python_so_far = code
            script = tmp_path / f"_docs_block_{i + 1}.py"
            script.write_text(code, encoding="utf-8")
            cmd = [sys.executable, str(script)]
        else:
            cmd = ["bash", "-euo", "pipefail", "-c", b.code]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
        assert proc.returncode == 0, (f"docs/{page}:{b.line} ({b.lang} block) exited {proc.returncode}\n"
                                      f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        ran += 1
    assert ran > 0, f"docs/{page}: every code block is marked; nothing ran"
