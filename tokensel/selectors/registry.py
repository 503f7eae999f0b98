"""The selector registry: ``@register_selector``, ``create_selector``, ``selector_info``,
``list_selectors``, plug-ins, and ``tokensel selectors``.

Names come from the built-in modules (imported by :mod:`tokensel.selectors` through
:mod:`tokensel.selectors.builtin`, so that every ``@register_selector`` has run before a name is
looked up), from plug-ins and from ``register_selector`` calls. The table itself is
:data:`tokensel.selectors.table.SELECTORS` (below :mod:`~tokensel.selectors.base`, which reads it
for ``Selector.name``), a :class:`tokensel.registry.Registry`: a taken name is refused with
:class:`~tokensel.registry.DuplicateNameError`, an unknown one raises
:class:`~tokensel.registry.UnknownNameError` listing the registered and plug-in names.

Plug-ins: other distributions register selectors through the entry-point group
``tokensel.selectors``, one entry per name::

    # pyproject.toml of the plug-in distribution
    [project.entry-points."tokensel.selectors"]
    my-method = "my_package.selectors:MyMethod"

The object named must be a :class:`~tokensel.Selector` subclass. It is imported when its name
is looked up (``create_selector``, ``selector_info``, a config's ``selector.name``, ``tokensel
eval``, lmms-eval) or when every name is listed (``list_selectors``, ``tokensel selectors``), and
registered under the entry point's name. A plug-in that fails to import, or whose name is
claimed by a built-in or by another distribution too, raises :class:`PluginError` naming the
distributions when it is asked for by name; listing leaves it out with a ``RuntimeWarning``
carrying the same message (:class:`tokensel.plugins.PluginGroup`, shared with the dataset
plug-ins).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tokensel.docstrings import plain, summary
from tokensel.plugins import PluginError, PluginGroup
from tokensel.selectors.base import Selector
from tokensel.selectors.table import SELECTORS, SelectorInfo, registered_name

__all__ = [
    "GROUP", "PluginError", "SELECTORS", "accepted_params", "SELECTOR_PLUGINS", "SelectorInfo", "create_selector", "list_selectors",
    "register_selector", "registered", "registered_name", "selector_info", "unregister_selector",
]

S = TypeVar("S", bound=type[Selector])

GROUP = "tokensel.selectors"


def _info(name: str, cls: type[Selector], paper: str, description: str | None,
          defaults: dict[str, Any]) -> SelectorInfo:
    if not (isinstance(cls, type) and issubclass(cls, Selector)):
        raise TypeError(f"register_selector expects a Selector subclass, got {cls!r}")
    return SelectorInfo(name=name, cls=cls, stage=cls.stage,
                        description=plain(description) if description else summary(inspect.getdoc(cls)),
                        paper=paper, defaults=dict(defaults), accepts=accepted_params(cls))


def accepted_params(cls: type) -> frozenset[str] | None:
    """The names of the constructor parameters of ``cls`` (None when it takes ``**kwargs``)."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not p.VAR_POSITIONAL)


def register_selector(name: str, *, paper: str = "", description: str | None = None,
                      **defaults: Any) -> Callable[[S], S]:
    """Class decorator that registers a :class:`Selector` subclass under ``name``.

    ``defaults`` are keyword arguments passed to the constructor unless the caller overrides
    them, so one class can be registered under several names (``mmtok-text`` is ``mmtok``
    with the vision-vision term switched off). ``description``: the one line ``tokensel
    selectors`` prints for this name (default: the first sentence of the class docstring, in
    plain text); give one for each name of a class registered under several. A name that is
    taken raises :class:`~tokensel.registry.DuplicateNameError` naming both classes.
    """

    def decorator(cls: S) -> S:
        SELECTORS.add(name, _info(name, cls, paper, description, defaults))
        return cls

    return decorator


def unregister_selector(name: str) -> None:
    """Remove the selector registered as ``name`` (for tests; see also :func:`registered`).
    A plug-in's name is registered again from its entry point on its next lookup."""
    SELECTORS.remove(name)


@contextmanager
def registered(name: str, cls: type[Selector], **defaults: Any) -> Iterator[type[Selector]]:
    """Context manager: ``cls`` registered as ``name`` (with ``defaults``) inside the block only::

        with tokensel.registered("mine", MySelector):
            tokensel.create_selector("mine")
    """
    with SELECTORS.registered(name, _info(name, cls, "", None, defaults)):
        yield cls


#: The selector entry-point group, registering into :data:`SELECTORS`.
SELECTOR_PLUGINS: PluginGroup[SelectorInfo] = PluginGroup(
    group=GROUP,
    kind="selector",
    expected="a tokensel.Selector subclass",
    accepts=lambda obj: isinstance(obj, type) and issubclass(obj, Selector),
    register=lambda name, cls: register_selector(name)(cls),
    registry=SELECTORS,
    same=lambda info, cls: info.cls is cls,
)


def selector_info(name: str) -> SelectorInfo:
    """The :class:`SelectorInfo` registered under ``name`` (a plug-in is loaded on first use)."""
    return SELECTOR_PLUGINS.lookup(name)


def create_selector(name: str | SelectorInfo, **params: Any) -> Selector:
    """Instantiate the selector registered as ``name`` (or described by the
    :class:`SelectorInfo` a caller looked up already) with ``params`` over its defaults."""
    info = name if isinstance(name, SelectorInfo) else selector_info(name)
    name = info.name
    kwargs = {**info.defaults, **params}
    if info.accepts is not None:
        unknown = sorted(set(kwargs) - info.accepts)
        if unknown:
            allowed = [p for p in inspect.signature(info.cls).parameters if p in info.accepts]
            raise TypeError(
                f"selector {name!r} got unknown parameter(s) {unknown}; accepted: {', '.join(allowed) or 'none'}"
            )
    sel: Selector = info.cls(**kwargs)
    sel.name = name
    return sel


def list_selectors(stage: str | None = None) -> list[str]:
    """Sorted names of registered selectors, optionally only those of one ``stage``
    ("vision": before the language model; "llm": inside it); installed plug-ins included."""
    SELECTOR_PLUGINS.load_all(stacklevel=3)
    return sorted(n for n, info in SELECTORS.items() if stage is None or info.stage == stage)


def main(argv: list[str] | None = None) -> int:
    """``tokensel selectors``: print the registry as a table."""
    names = list_selectors()
    width = max(len(n) for n in names)
    print(f"{'name':<{width}}  stage   description")
    for name in names:
        info = SELECTORS[name]
        print(f"{name:<{width}}  {info.stage:<6}  {info.description}")
    return 0
