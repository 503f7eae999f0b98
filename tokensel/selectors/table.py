"""The selector registrations (name -> :class:`SelectorInfo`) and the name an instance matches.

Below :mod:`tokensel.selectors.base` (``Selector.name`` reads it); registering and looking
names up is :mod:`tokensel.selectors.registry`, the selector registry's one public module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokensel.registry import Registry, owner_of

__all__ = ["SELECTORS", "SelectorInfo", "registered_name"]


@dataclass(frozen=True)
class SelectorInfo:
    """Metadata kept apart from the selector class."""

    name: str
    #: The registered :class:`~tokensel.Selector` subclass.
    cls: type
    stage: str
    description: str
    paper: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    #: The constructor's keyword parameters (None: it takes ``**kwargs``, so any), read once
    #: from its signature: the one answer to "which parameters does this selector accept".
    accepts: frozenset[str] | None = frozenset()


#: Every registered selector (built-ins, plug-ins loaded so far, ``register_selector`` calls).
SELECTORS: Registry[SelectorInfo] = Registry("selector", owner=lambda info: owner_of(info.cls))


def registered_name(selector: object) -> str:
    """The name of the registration that ``selector`` matches most specifically: among the
    registrations of its class (else of its nearest registered base class), the one with the
    most defaults, all equal to the instance's attributes. "" if none matches.

    A class is registered when its module is imported (``@register_selector`` runs there), so
    an instance's class, and every registration of it, is in the table already."""
    missing = object()
    for cls in type(selector).__mro__:
        best, best_size = "", -1
        for info in SELECTORS.values():
            if info.cls is not cls or len(info.defaults) <= best_size:
                continue
            if all(getattr(selector, key, missing) == value for key, value in info.defaults.items()):
                best, best_size = info.name, len(info.defaults)
        if best_size >= 0:
            return best
    return ""
