"""Selectors: MMTok and the baselines behind one registry (:mod:`tokensel.selectors.registry`).

Importing the package imports every built-in selector module (:mod:`tokensel.selectors.builtin`),
so their ``@register_selector`` has run before any name is looked up.
"""

import tokensel.selectors.builtin  # noqa: F401  (runs every built-in @register_selector)
from tokensel.selectors.base import Selector, budget_from_ratio, check_budget
from tokensel.selectors.objective import ObjectiveSelector
from tokensel.selectors.registry import (
    SelectorInfo,
    create_selector,
    list_selectors,
    register_selector,
    registered,
    selector_info,
    unregister_selector,
)

__all__ = [
    "ObjectiveSelector",
    "Selector",
    "SelectorInfo",
    "budget_from_ratio",
    "check_budget",
    "create_selector",
    "list_selectors",
    "register_selector",
    "registered",
    "selector_info",
    "unregister_selector",
]
