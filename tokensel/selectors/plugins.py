"""Selector plug-ins: other distributions register selectors through the entry-point group
``tokensel.selectors``, one entry per name::

    # pyproject.toml of the plug-in distribution
    [project.entry-points."tokensel.selectors"]
    my-method = "my_package.selectors:MyMethod"

The object named must be a :class:`~tokensel.Selector` subclass. It is imported when its name
is first looked up (``create_selector``, ``selector_info``, a config's ``selector.name``,
``tokensel eval``, lmms-eval) or when every name is listed (``list_selectors``, ``tokensel
selectors``), and registered under the entry point's name. A plug-in that fails to import
raises :class:`PluginError` naming the distribution and the entry point when it is asked for
by name; listing leaves it out with a ``RuntimeWarning`` carrying the same message.
"""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint, entry_points

__all__ = ["GROUP", "PluginError", "plugin_entry_points", "load_plugin", "load_plugins"]

GROUP = "tokensel.selectors"


class PluginError(ImportError):
    """A selector plug-in could not be imported or is not a Selector subclass."""


def plugin_entry_points() -> dict[str, EntryPoint]:
    """The installed entry points of the group ``tokensel.selectors``, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def _load(ep: EntryPoint) -> None:
    from tokensel.selectors.base import Selector
    from tokensel.selectors.registry import _REGISTRY, register_selector

    where = f"selector plug-in {ep.name!r} ({ep.value}, entry point group {GROUP!r} of {_distribution(ep)})"
    try:
        obj = ep.load()
    except Exception as err:
        raise PluginError(f"{where} failed to import: {type(err).__name__}: {err}") from err
    if not (isinstance(obj, type) and issubclass(obj, Selector)):
        raise PluginError(f"{where} must name a tokensel.Selector subclass, got {obj!r}")
    if ep.name not in _REGISTRY:  # its module may have registered it itself
        register_selector(ep.name)(obj)


def load_plugin(name: str) -> bool:
    """Import and register the plug-in named ``name``; False if no plug-in has that name."""
    ep = plugin_entry_points().get(name)
    if ep is None:
        return False
    _load(ep)
    return True


def load_plugins(strict: bool = False) -> None:
    """Import and register every installed plug-in not registered yet. A plug-in that fails
    raises :class:`PluginError` with ``strict``; otherwise it is left out with a warning naming
    its distribution (a broken plug-in must not take the other selectors down with it; asking
    for it by name raises the error)."""
    from tokensel.selectors.registry import _REGISTRY

    for name, ep in sorted(plugin_entry_points().items()):
        if name not in _REGISTRY:
            try:
                _load(ep)
            except PluginError as err:
                if strict:
                    raise
                warnings.warn(str(err), RuntimeWarning, stacklevel=3)
