"""Plug-ins from other distributions: one entry-point group per extension point.

A :class:`PluginGroup` names a group (``tokensel.selectors``, ``tokensel.datasets``), what its
entries must be and how to register them. An entry is imported when its name is first looked up
(:meth:`PluginGroup.load`) or when every name is listed (:meth:`PluginGroup.load_all`), and
registered under the entry point's name unless importing it registered it already. One that
fails to import, or is not what the group expects, raises :class:`PluginError` naming the
distribution and the entry point when it is asked for by name; listing leaves it out with a
``RuntimeWarning`` carrying the same message (a broken plug-in must not take the others down).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

__all__ = ["PluginError", "PluginGroup"]


class PluginError(ImportError):
    """A plug-in could not be imported or is not what its entry-point group expects."""


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


@dataclass(frozen=True)
class PluginGroup:
    """One entry-point group and the registry its entries go into."""

    #: The entry-point group, e.g. ``"tokensel.selectors"``.
    group: str
    #: What an entry is, for messages: ``"selector"``, ``"dataset"``.
    kind: str
    #: What the object an entry names must be, for messages: ``"a tokensel.Selector subclass"``.
    expected: str
    #: True for an object the group accepts.
    accepts: Callable[[object], bool]
    #: ``register(name, obj)``: put an accepted object into the registry under ``name``.
    register: Callable[[str, object], None]
    #: The names registered now (plug-ins that registered themselves on import included).
    registered: Callable[[], Collection[str]]

    def entry_points(self) -> dict[str, EntryPoint]:
        """The installed entry points of the group, by name."""
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def _load(self, ep: EntryPoint) -> None:
        where = f"{self.kind} plug-in {ep.name!r} ({ep.value}, entry point group {self.group!r} of {_distribution(ep)})"
        try:
            obj = ep.load()
        except Exception as err:
            raise PluginError(f"{where} failed to import: {type(err).__name__}: {err}") from err
        if not self.accepts(obj):
            raise PluginError(f"{where} must name {self.expected}, got {obj!r}")
        if ep.name not in self.registered():  # its module may have registered it itself
            self.register(ep.name, obj)

    def load(self, name: str) -> bool:
        """Import and register the plug-in named ``name``; False if no plug-in has that name."""
        ep = self.entry_points().get(name)
        if ep is None:
            return False
        self._load(ep)
        return True

    def load_all(self, strict: bool = False, stacklevel: int = 2) -> None:
        """Import and register every installed plug-in not registered yet; one that fails
        raises :class:`PluginError` with ``strict``, otherwise it is left out with a warning
        (``stacklevel`` as :func:`warnings.warn`'s, counted from the caller of this method)."""
        for name, ep in sorted(self.entry_points().items()):
            if name not in self.registered():
                try:
                    self._load(ep)
                except PluginError as err:
                    if strict:
                        raise
                    warnings.warn(str(err), RuntimeWarning, stacklevel=stacklevel + 1)
