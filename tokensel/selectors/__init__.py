"""Selectors: MMTok and the baselines behind one registry."""

from tokensel.selectors.base import Selector, budget_from_ratio, check_budget
from tokensel.selectors.registry import (
    SelectorInfo,
    create_selector,
    list_selectors,
    register_selector,
    selector_info,
)

__all__ = [
    "Selector",
    "SelectorInfo",
    "budget_from_ratio",
    "check_budget",
    "create_selector",
    "list_selectors",
    "register_selector",
    "selector_info",
]
