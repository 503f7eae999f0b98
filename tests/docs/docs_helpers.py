"""Shared helpers of the documentation tests: the MkDocs hook module and paths."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def load_docs_module(name: str):
    """Import ``docs/<name>.py`` (the docs folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"tokensel_docs_{name}", DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
