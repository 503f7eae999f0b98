"""Every tutorial notebook executes top to bottom and shows the figures it promises.

The notebooks' single source is ``notebooks/NN_name.py`` (jupytext percent format); executing
one writes the executed ``docs/tutorials/NN_name.ipynb`` that the site renders, so the site
build in ``test_site.py`` (which runs after this module) reuses these results.
"""

from __future__ import annotations

import pytest
from docs_helpers import ROOT, load_docs_module

hooks = load_docs_module("hooks")
SOURCES = hooks.tutorial_sources()


def test_all_tutorials_present():
    names = [p.stem for p in SOURCES]
    assert names == [
        "01_quickstart",
        "02_mmtok_objective",
        "03_custom_selector",
        "04_pruning_a_vlm",
        "05_ablation_sweep",
        "06_your_own_method",
        "07_adaptive_budgets",
    ]


def _images(nb) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


@pytest.mark.slow
@pytest.mark.parametrize("src", SOURCES, ids=[p.stem for p in SOURCES])
def test_tutorial_executes(src):
    nb = hooks.execute_tutorial(src)  # raises CellExecutionError on the first failing cell
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and all(c.get("execution_count") for c in code_cells), "every code cell ran"
    errors = [o for c in code_cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert _images(nb) >= 1, f"{src.name} should show at least one figure"
    assert hooks.is_fresh(src), "the executed notebook is recorded as fresh for the site build"
    assert (ROOT / "docs" / "tutorials" / f"{src.stem}.ipynb").is_file()
