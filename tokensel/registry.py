"""The one registry helper behind every ``register_*`` of tokensel: selectors, solvers, model
families, datasets and the experiments' model builders.

A :class:`Registry` is a read-only mapping ``name -> entry`` of one kind (``"selector"``,
``"solver"``, ...) with the same rules for every kind:

- a name is a non-empty ``str`` (``TypeError`` otherwise);
- a name is registered once: registering a taken name raises :class:`DuplicateNameError`
  naming the name and both owners (the module and object that registered it, and the one that
  tried), unless the caller passes ``replace=True``;
- looking up a name that is not there raises :class:`UnknownNameError` listing the names that
  are; :meth:`Registry.remove` of such a name raises it too;
- :meth:`Registry.registered` is a context manager holding a registration for one block (and
  putting back what it replaced), for tests and temporary plug-ins.

The kinds keep their own decorators (``@register_selector``, ``@register_solver``, ...), which
build their entry and call :meth:`Registry.add`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar

__all__ = ["DuplicateNameError", "Registry", "UnknownNameError", "owner_of"]

T = TypeVar("T")


class DuplicateNameError(ValueError):
    """A name that is registered already was registered again (without ``replace=True``)."""


class UnknownNameError(ValueError):
    """A name that is not registered was looked up or removed."""


def owner_of(obj: object) -> str:
    """``module.qualname`` of a class or function (what registered a name), else its repr."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return repr(obj)


class Registry(Mapping[str, T], Generic[T]):
    """The registrations of one kind.

    Args:
        kind: what an entry is, for messages (``"selector"``, ``"model family"``).
        owner: ``owner(entry) -> str``: who registered an entry, for messages (default: the
            ``module.qualname`` of the entry itself, :func:`owner_of`).
    """

    def __init__(self, kind: str, owner: Callable[[T], str] = owner_of) -> None:
        self.kind = kind
        self._owner = owner
        self._entries: dict[str, T] = {}

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def owner(self, name: str) -> str:
        """Who registered ``name`` (``module.qualname``)."""
        return self._owner(self.lookup(name))

    def _check_name(self, name: object) -> str:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty str, got {name!r}")
        return name

    def add(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Register ``entry`` as ``name``; :class:`DuplicateNameError` if ``name`` is taken,
        unless ``replace``. Returns ``entry``."""
        name = self._check_name(name)
        old = self._entries.get(name)
        if old is not None and not replace:
            raise DuplicateNameError(
                f"a {self.kind} named {name!r} is already registered by {self._owner(old)}; refusing to replace it "
                f"with {self._owner(entry)} (unregister it first, or pass replace=True)"
            )
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> T:
        """Take ``name`` out and return its entry; :class:`UnknownNameError` if it is not there."""
        if name not in self._entries:
            raise UnknownNameError(f"no {self.kind} named {name!r} is registered; registered: {', '.join(self.names())}")
        return self._entries.pop(name)

    def lookup(self, name: object, *, also: Iterable[str] = ()) -> T:
        """The entry of ``name``; :class:`UnknownNameError` listing the registered names (and
        ``also``: names that could be registered on demand, e.g. plug-ins) otherwise."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a str, got {type(name).__name__}")
        entry = self._entries.get(name)
        if entry is None:
            available = sorted(set(self._entries) | set(also))
            raise UnknownNameError(f"unknown {self.kind} name {name!r}; available: {', '.join(available)}")
        return entry

    @contextmanager
    def registered(self, name: str, entry: T, *, replace: bool = False) -> Iterator[T]:
        """Context manager: ``entry`` registered as ``name`` inside the block only (what it
        replaced, with ``replace``, is registered again after it)."""
        old = self._entries.get(name)
        self.add(name, entry, replace=replace)
        try:
            yield entry
        finally:
            if self._entries.get(name) is entry:
                del self._entries[name]
            if old is not None:
                self._entries[name] = old
