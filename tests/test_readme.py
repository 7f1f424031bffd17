"""The README is a front page that works: every ```python block runs as written in a
fresh process from the repository root, the page stays short, the set-up block holds
exactly the two commands, and every relative link of the README and of docs/ resolves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_LINES = 250
#: Per block; each takes well under a minute on one idle thread, more on a busy machine.
TIMEOUT_S = 600

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
# [text](target) and ![alt](target); the target ends at whitespace or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def fenced_blocks(text: str, language: str) -> list[str]:
    """Bodies of the fenced code blocks tagged ``language``, in order."""
    return [body for lang, body in FENCE.findall(text) if lang == language]


def section(text: str, heading: str) -> str:
    """The text under a ``## heading`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if match is None:
        raise AssertionError(f"README.md has no '## {heading}' section")
    return match.group(1)


def relative_links(path: Path) -> list[tuple[str, str]]:
    """``(file, anchor)`` of every link in a markdown file that points into the
    repository (not a URL); ``file`` is empty for an in-page anchor. Links inside code
    blocks are ignored."""
    text = FENCE.sub("", path.read_text())
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue
        file, _, anchor = target.partition("#")
        out.append((file, anchor))
    return out


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file: lower case, punctuation
    other than ``-`` and ``_`` dropped, spaces to ``-``."""
    text = FENCE.sub("", path.read_text())
    slugs = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


README_TEXT = README.read_text()
PYTHON_BLOCKS = fenced_blocks(README_TEXT, "python")


def test_readme_has_python_blocks() -> None:
    assert len(PYTHON_BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs(index: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, "-c", PYTHON_BLOCKS[index]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"README python block {index + 1} failed (exit {proc.returncode}):\n"
        f"{PYTHON_BLOCKS[index]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )


def test_readme_is_short() -> None:
    lines = README_TEXT.count("\n") + (not README_TEXT.endswith("\n"))
    assert lines <= MAX_LINES, f"README.md has {lines} lines; keep it at most {MAX_LINES}"


def test_setup_block_has_exactly_two_commands() -> None:
    blocks = fenced_blocks(section(README_TEXT, "Set up"), "bash")
    assert blocks, "the Set up section needs a ```bash block"
    commands = [
        line
        for line in blocks[0].splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(commands) == 2, commands
    assert all(c.startswith("pip install torch==2.13.0 && pip install -e ") for c in commands)


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(path: Path) -> None:
    missing, bad_anchor = [], []
    for file, anchor in relative_links(path):
        target = (path.parent / file) if file else path
        if not target.exists():
            missing.append(file)
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            bad_anchor.append(f"{file}#{anchor}")
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"
    assert not bad_anchor, f"{path.relative_to(ROOT)} links to missing headings: {bad_anchor}"


def test_docs_exist() -> None:
    names = {p.name for p in DOCS}
    assert {"method.md", "architecture.md", "cli.md"} <= names
