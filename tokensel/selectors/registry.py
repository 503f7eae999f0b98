"""Selector lookup by name: ``create_selector``, ``selector_info``, ``list_selectors``.

Names come from the built-in modules (:mod:`tokensel.selectors.builtin`) and from plug-ins (entry
points of the group ``tokensel.selectors``, see :mod:`tokensel.selectors.plugins`). Registering
is :mod:`tokensel.selectors.registration` (``@register_selector``, re-exported here)."""

from __future__ import annotations

import inspect

import tokensel.selectors.builtin  # noqa: F401  (importing the modules runs their @register_selector)
from tokensel.selectors.base import Selector
from tokensel.selectors.plugins import SELECTOR_PLUGINS
from tokensel.selectors.registration import register_selector, registered, unregister_selector
from tokensel.selectors.table import _REGISTRY, SelectorInfo, registered_name

__all__ = [
    "register_selector", "unregister_selector", "registered", "create_selector", "list_selectors", "selector_info",
    "registered_name", "SelectorInfo",
]


def _lookup(name: str) -> SelectorInfo:
    if not isinstance(name, str):
        raise TypeError(f"selector name must be a str, got {type(name).__name__}")
    if name not in _REGISTRY and not SELECTOR_PLUGINS.load(name):
        names = sorted(set(_REGISTRY) | set(SELECTOR_PLUGINS.entry_points()))
        raise ValueError(f"unknown selector name {name!r}; available: {', '.join(names)}")
    return _REGISTRY[name]


def selector_info(name: str) -> SelectorInfo:
    """The :class:`SelectorInfo` registered under ``name``."""
    return _lookup(name)


def create_selector(name: str, **params) -> Selector:
    """Instantiate the selector registered as ``name`` with ``params`` over its defaults."""
    info = _lookup(name)
    kwargs = {**info.defaults, **params}
    takes_none = info.cls.__init__ is object.__init__
    sig = inspect.signature(info.cls.__init__) if not takes_none else None
    if takes_none or not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        allowed = [] if takes_none else [p for p in sig.parameters if p != "self"]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise TypeError(
                f"selector {name!r} got unknown parameter(s) {unknown}; accepted: {', '.join(allowed) or 'none'}"
            )
    sel = info.cls(**kwargs)
    sel.name = name
    return sel


def list_selectors(stage: str | None = None) -> list[str]:
    """Sorted names of registered selectors, optionally only those of one ``stage``
    ("vision": before the language model; "llm": inside it)."""
    SELECTOR_PLUGINS.load_all(stacklevel=3)
    return sorted(n for n, info in _REGISTRY.items() if stage is None or info.stage == stage)
