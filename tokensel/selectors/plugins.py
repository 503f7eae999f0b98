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
by name; listing leaves it out with a ``RuntimeWarning`` carrying the same message. The
loading itself is :class:`tokensel.plugins.PluginGroup`, shared with the dataset plug-ins.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint

from tokensel.plugins import PluginError, PluginGroup
from tokensel.selectors.base import Selector
from tokensel.selectors.registration import register_selector
from tokensel.selectors.table import _REGISTRY

__all__ = ["GROUP", "PluginError", "SELECTOR_PLUGINS", "plugin_entry_points", "load_plugin", "load_plugins"]

GROUP = "tokensel.selectors"

#: The selector entry-point group, registering into the selector table.
SELECTOR_PLUGINS = PluginGroup(
    group=GROUP,
    kind="selector",
    expected="a tokensel.Selector subclass",
    accepts=lambda obj: isinstance(obj, type) and issubclass(obj, Selector),
    register=lambda name, cls: register_selector(name)(cls),
    registered=lambda: _REGISTRY,
)


def plugin_entry_points() -> dict[str, EntryPoint]:
    """The installed entry points of the group ``tokensel.selectors``, by name."""
    return SELECTOR_PLUGINS.entry_points()


def load_plugin(name: str) -> bool:
    """Import and register the plug-in named ``name``; False if no plug-in has that name."""
    return SELECTOR_PLUGINS.load(name)


def load_plugins(strict: bool = False) -> None:
    """Import and register every installed plug-in not registered yet. A plug-in that fails
    raises :class:`PluginError` with ``strict``; otherwise it is left out with a warning naming
    its distribution (a broken plug-in must not take the other selectors down with it; asking
    for it by name raises the error)."""
    SELECTOR_PLUGINS.load_all(strict, stacklevel=3)
