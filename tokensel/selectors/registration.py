"""``@register_selector``: put a :class:`~tokensel.Selector` subclass into the table of
:mod:`tokensel.selectors.table` under a name (and take it out again, for tests).

Selector modules import this, not :mod:`tokensel.selectors.registry` (which imports every
built-in selector module to look names up)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable, TypeVar

from tokensel.docstrings import plain, summary
from tokensel.selectors.base import Selector
from tokensel.selectors.table import _REGISTRY, SelectorInfo

__all__ = ["register_selector", "unregister_selector", "registered"]

S = TypeVar("S", bound=type[Selector])


def register_selector(name: str, *, paper: str = "", description: str = "", **defaults) -> Callable[[S], S]:
    """Class decorator that registers a :class:`Selector` subclass under ``name``.

    ``defaults`` are keyword arguments passed to the constructor unless the caller overrides
    them, so one class can be registered under several names (``mmtok-text`` is ``mmtok``
    with the vision-vision term switched off). ``description``: the one line ``tokensel
    selectors`` prints for this name (default: the first sentence of the class docstring, in
    plain text); give one for each name of a class registered under several.
    """

    def decorator(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Selector)):
            raise TypeError(f"register_selector expects a Selector subclass, got {cls!r}")
        if name in _REGISTRY:
            raise ValueError(f"a selector named {name!r} is already registered ({_REGISTRY[name].cls.__name__})")
        _REGISTRY[name] = SelectorInfo(
            name=name,
            cls=cls,
            stage=cls.stage,
            description=plain(description) if description else summary(inspect.getdoc(cls)),
            paper=paper,
            defaults=dict(defaults),
        )
        return cls

    return decorator


def unregister_selector(name: str) -> None:
    """Remove the selector registered as ``name`` (for tests; see also :func:`registered`).
    A plug-in's name is registered again from its entry point on its next lookup."""
    if name not in _REGISTRY:
        raise ValueError(f"no selector named {name!r} is registered")
    del _REGISTRY[name]


@contextmanager
def registered(name: str, cls: type[Selector], **defaults) -> Iterator[type[Selector]]:
    """Context manager: ``cls`` registered as ``name`` (with ``defaults``) inside the block only::

        with tokensel.registered("mine", MySelector):
            tokensel.create_selector("mine")
    """
    register_selector(name, **defaults)(cls)
    try:
        yield cls
    finally:
        _REGISTRY.pop(name, None)
