"""The architecture page names only files that exist: every path it gives (``tokensel/...``,
``tests/...``, ``experiments/...``, ``docs/...``, and a bare ``name.py`` of the package it is
talking about) is checked against the checkout."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "architecture.md"
PATH = re.compile(r"`((?:tokensel|tests|experiments|docs)/[\w./<>-]*?)`")
BARE = re.compile(r"`([\w]+\.py)`")


def _named(text: str) -> list[str]:
    return [p for p in PATH.findall(text) if "<" not in p]


def test_every_path_on_the_page_exists():
    text = PAGE.read_text()
    paths = _named(text)
    assert len(paths) > 20  # the pattern finds the page's paths
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_bare_module_name_exists_in_the_package():
    names = set(BARE.findall(PAGE.read_text()))
    modules = {p.name for top in ("tokensel", "experiments", "tests") for p in (REPO / top).rglob("*.py")}
    assert not names - modules, f"docs/architecture.md names modules that do not exist: {sorted(names - modules)}"


def test_the_check_finds_a_missing_file():
    assert _named("see `tokensel/selectors/nothing_here.py` and `tokensel/ops.py`") == [
        "tokensel/selectors/nothing_here.py", "tokensel/ops.py"]
    assert not (REPO / "tokensel/selectors/nothing_here.py").exists()
