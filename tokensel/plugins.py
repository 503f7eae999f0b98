"""Plug-ins from other distributions: one entry-point group per extension point.

A :class:`PluginGroup` names a group (``tokensel.selectors``, ``tokensel.datasets``), what its
entries must be and the :class:`~tokensel.registry.Registry` they go into. An entry is imported
when its name is looked up (:meth:`PluginGroup.load`) or when every name is listed
(:meth:`PluginGroup.load_all`), and registered under the entry point's name unless importing it
registered it already.

Errors, each naming the distribution(s) and the entry point:

- an entry that fails to import, or is not what the group expects;
- a name claimed twice: by two installed distributions, or by a plug-in and a name registered
  in code (a built-in, or a ``register_*`` call). tokensel refuses to pick one, since either
  choice could run another method than the user meant with no sign of it.

Asking for such a name (``create_selector``, ``get_dataset``, a config) raises
:class:`PluginError`; listing every name leaves it out (a clashing built-in stays listed) with a
``RuntimeWarning`` carrying the same message, so that one bad plug-in does not take the others
down. The remedy is in the message: uninstall one distribution or rename its entry point.

The installed entry points are read once per ``sys.path`` (a change of ``sys.path`` reads them
again; :meth:`PluginGroup.refresh` after installing into a folder already on it).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points, packages_distributions, version
from typing import Any, Generic, TypeVar

from tokensel.registry import Registry

__all__ = ["PluginError", "PluginGroup"]

T = TypeVar("T")


class PluginError(ImportError):
    """A plug-in could not be imported, is not what its entry-point group expects, or claims a
    name that another distribution or a built-in claims too."""


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def _distribution_of_module(module: str) -> str:
    """The installed distribution(s) providing the top-level package of ``module``."""
    names = packages_distributions().get(module.split(".")[0], [])
    if not names:
        return "no installed distribution"
    return ", ".join(f"{n} {version(n)}" for n in names)


@dataclass
class PluginGroup(Generic[T]):
    """One entry-point group and the registry its entries go into."""

    #: The entry-point group, e.g. ``"tokensel.selectors"``.
    group: str
    #: What an entry is, for messages: ``"selector"``, ``"dataset"``.
    kind: str
    #: What the object an entry names must be, for messages: ``"a tokensel.Selector subclass"``.
    expected: str
    #: True for an object the group accepts.
    accepts: Callable[[object], bool]
    #: ``register(name, obj)``: put an accepted object into :attr:`registry` under ``name``.
    register: Callable[[str, Any], object]
    #: The registry the group's entries go into.
    registry: Registry[T]
    #: ``same(entry, obj)``: whether the registered ``entry`` was made from the object ``obj``
    #: an entry point names (else the name is claimed twice).
    same: Callable[[T, Any], bool]
    _scanned: tuple[tuple[str, ...], dict[str, list[EntryPoint]]] | None = field(default=None, repr=False)

    def refresh(self) -> None:
        """Read the installed entry points again on the next lookup."""
        self._scanned = None

    def _scan(self) -> dict[str, list[EntryPoint]]:
        key = tuple(sys.path)
        if self._scanned is None or self._scanned[0] != key:
            found: dict[str, list[EntryPoint]] = {}
            for ep in entry_points(group=self.group):
                found.setdefault(ep.name, []).append(ep)
            self._scanned = (key, found)
        return self._scanned[1]

    def entry_points(self) -> dict[str, EntryPoint]:
        """The installed entry points of the group, by name (the first of a name claimed twice)."""
        return {name: eps[0] for name, eps in self._scan().items()}

    def _where(self, ep: EntryPoint) -> str:
        return f"{self.kind} plug-in {ep.name!r} ({ep.value}, entry point group {self.group!r} of {_distribution(ep)})"

    def _load(self, ep: EntryPoint) -> None:
        where = self._where(ep)
        try:
            obj = ep.load()
        except Exception as err:
            raise PluginError(f"{where} failed to import: {type(err).__name__}: {err}") from err
        if not self.accepts(obj):
            raise PluginError(f"{where} must name {self.expected}, got {obj!r}")
        entry = self.registry.get(ep.name)
        if entry is None:
            self.register(ep.name, obj)
        elif not self.same(entry, obj):  # registered in code, not from this entry point
            owner = self.registry.owner(ep.name)
            raise PluginError(
                f"{self.kind} name {ep.name!r} is claimed twice: by the {where} and by {owner} (registered in code, "
                f"distribution {_distribution_of_module(owner)}); refusing to pick one: uninstall the plug-in's "
                "distribution or rename its entry point"
            )

    def load(self, name: str) -> bool:
        """Import and register the plug-in named ``name`` (or check that the registered ``name``
        is that plug-in); False if no plug-in has that name. :class:`PluginError` if it fails to
        import or its name is claimed twice."""
        eps = self._scan().get(name)
        if not eps:
            return False
        if len(eps) > 1:
            dists = sorted({_distribution(ep) for ep in eps})
            offers = " and ".join(sorted(f"{_distribution(ep)} ({ep.value})" for ep in eps))
            raise PluginError(
                f"{self.kind} plug-in name {name!r} is claimed by {len(dists)} distributions of entry point group "
                f"{self.group!r}: {offers}; refusing to pick one: uninstall one of them"
            )
        self._load(eps[0])
        return True

    def lookup(self, name: object) -> T:
        """The entry registered as ``name``, a plug-in loaded first if one has that name;
        :class:`~tokensel.registry.UnknownNameError` listing registered and plug-in names."""
        if isinstance(name, str):
            self.load(name)
        return self.registry.lookup(name, also=self._scan())

    def load_all(self, strict: bool = False, stacklevel: int = 2) -> None:
        """Import and register every installed plug-in; one that fails raises
        :class:`PluginError` with ``strict``, otherwise it is left out with a warning
        (``stacklevel`` as :func:`warnings.warn`'s, counted from the caller of this method)."""
        for name in sorted(self._scan()):
            try:
                self.load(name)
            except PluginError as err:
                if strict:
                    raise
                warnings.warn(str(err), RuntimeWarning, stacklevel=stacklevel + 1)
