"""Selector registry: ``@register_selector`` + ``create_selector`` + ``list_selectors``.

Names come from the built-in modules and from plug-ins (entry points of the group
``tokensel.selectors``, see :mod:`tokensel.selectors.plugins`)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from tokensel.selectors.base import Selector

__all__ = [
    "register_selector", "unregister_selector", "registered", "create_selector", "list_selectors", "selector_info",
    "registered_name", "SelectorInfo",
]

S = TypeVar("S", bound=type[Selector])


@dataclass(frozen=True)
class SelectorInfo:
    """Metadata kept apart from the selector class."""

    name: str
    cls: type[Selector]
    stage: str
    description: str
    paper: str = ""
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, SelectorInfo] = {}


def register_selector(name: str, *, paper: str = "", **defaults) -> Callable[[S], S]:
    """Class decorator that registers a :class:`Selector` subclass under ``name``.

    ``defaults`` are keyword arguments passed to the constructor unless the caller overrides
    them, so one class can be registered under several names (``mmtok-text`` is ``mmtok``
    with the vision-vision term switched off).
    """

    def decorator(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Selector)):
            raise TypeError(f"register_selector expects a Selector subclass, got {cls!r}")
        if name in _REGISTRY:
            raise ValueError(f"a selector named {name!r} is already registered ({_REGISTRY[name].cls.__name__})")
        doc = inspect.getdoc(cls) or ""
        _REGISTRY[name] = SelectorInfo(
            name=name,
            cls=cls,
            stage=cls.stage,
            description=doc.splitlines()[0] if doc else "",
            paper=paper,
            defaults=dict(defaults),
        )
        return cls

    return decorator


def _lookup(name: str) -> SelectorInfo:
    _load_builtin_selectors()
    if not isinstance(name, str):
        raise TypeError(f"selector name must be a str, got {type(name).__name__}")
    if name not in _REGISTRY:
        from tokensel.selectors.plugins import load_plugin, plugin_entry_points

        if not load_plugin(name):
            names = sorted(set(_REGISTRY) | set(plugin_entry_points()))
            raise ValueError(f"unknown selector name {name!r}; available: {', '.join(names)}")
    return _REGISTRY[name]


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


def registered_name(selector: Selector) -> str:
    """The name of the registration that ``selector`` matches most specifically: among the
    registrations of its class (else of its nearest registered base class), the one with the
    most defaults, all equal to the instance's attributes. "" if none matches."""
    _load_builtin_selectors()
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


def list_selectors(stage: str | None = None) -> list[str]:
    """Sorted names of registered selectors, optionally only those of one ``stage``
    ("vision": before the language model; "llm": inside it)."""
    _load_builtin_selectors()
    from tokensel.selectors.plugins import load_plugins

    load_plugins()
    return sorted(n for n, info in _REGISTRY.items() if stage is None or info.stage == stage)


def _load_builtin_selectors() -> None:
    # Importing the modules runs their @register_selector decorators.
    import tokensel.selectors.builtin  # noqa: F401
