"""The table of selector registrations (name -> :class:`SelectorInfo`) and the name an
instance matches.

Below :mod:`tokensel.selectors.base` (``Selector.name`` reads it) and written by
:func:`tokensel.selectors.registration.register_selector`; looking names up, with the built-ins
and plug-ins loaded, is :mod:`tokensel.selectors.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SelectorInfo", "registered_name"]


@dataclass(frozen=True)
class SelectorInfo:
    """Metadata kept apart from the selector class."""

    name: str
    #: The registered :class:`~tokensel.Selector` subclass.
    cls: type
    stage: str
    description: str
    paper: str = ""
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, SelectorInfo] = {}


def registered_name(selector: object) -> str:
    """The name of the registration that ``selector`` matches most specifically: among the
    registrations of its class (else of its nearest registered base class), the one with the
    most defaults, all equal to the instance's attributes. "" if none matches.

    A class is registered when its module is imported (``@register_selector`` runs there), so
    an instance's class, and every registration of it, is in the table already."""
    missing = object()
    for cls in type(selector).__mro__:
        best, best_size = "", -1
        for info in _REGISTRY.values():
            if info.cls is not cls or len(info.defaults) <= best_size:
                continue
            if all(getattr(selector, key, missing) == value for key, value in info.defaults.items()):
                best, best_size = info.name, len(info.defaults)
        if best_size >= 0:
            return best
    return ""
