"""The import path of ``@register_selector`` for selector modules (a re-export of
:mod:`tokensel.selectors.registry`, the selector registry)."""

from tokensel.selectors.registry import register_selector, registered, unregister_selector

__all__ = ["register_selector", "registered", "unregister_selector"]
