"""tokensel: vision-token selection for vision-language models.

Core objects are imported eagerly; the model adapters (which import transformers) and the
model zoo load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from tokensel.batch import Selection, TokenBatch
from tokensel.budget import AdaptiveBudget
from tokensel.selectors import (
    ObjectiveSelector,
    Selector,
    create_selector,
    list_selectors,
    register_selector,
    registered,
    selector_info,
    unregister_selector,
)
from tokensel.solvers import Solution, list_solvers, maximize, register_solver

__version__ = "0.1.0"

_LAZY = {
    "prune": "tokensel.models",
    "load_vlm": "tokensel.models",
    "zoo": None,
    "models": None,
    "testing": None,
}

__all__ = [
    "ObjectiveSelector",
    "AdaptiveBudget",
    "Selection",
    "Selector",
    "Solution",
    "TokenBatch",
    "create_selector",
    "list_selectors",
    "list_solvers",
    "load_vlm",
    "maximize",
    "prune",
    "register_selector",
    "register_solver",
    "registered",
    "selector_info",
    "unregister_selector",
    "zoo",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tokensel' has no attribute {name!r}")
    module = _LAZY[name]
    if module is None:
        return importlib.import_module(f"tokensel.{name}")
    return getattr(importlib.import_module(module), name)
