"""Solver registry: ``@register_solver`` + ``solver_info`` + ``list_solvers``.

A solver is a function ``fn(objective, k, *, tol=None, **options) -> Solution`` that picks at
most ``k`` candidates of a :class:`~tokensel.objectives.CoverageObjective`, never an excluded
one. :func:`tokensel.maximize` looks it up by name, checks what it returns (distinct,
allowed, at most k picks, exactly k without ``tol``) and recomputes ``Solution.value`` with
the objective, so a registered solver cannot report a value its picks do not have.

A solver may also offer a batched form, ``batched(blocks, k, blocked, *, workspace=None,
**options) -> long [B, k]``, for facility-location coverage given as blocks ``(C [B, R, n],
weight)``; :class:`~tokensel.selectors.ObjectiveSelector` uses it when the selector can build
its coverage for a whole batch at once (``mmtok`` with the ``incremental`` solver).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from tokensel.registry import Registry, owner_of

__all__ = ["SOLVERS", "SolverInfo", "list_solvers", "register_solver", "registered", "solver_info", "unregister_solver"]

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class SolverInfo:
    """What the registry keeps about a solver.

    Attributes:
        name: the registered name.
        fn: ``fn(objective, k, *, tol=None, **options) -> Solution``.
        description: first line of the function's docstring.
        guarantee: the worst-case approximation ratio it is proven to reach on monotone
            submodular objectives (1.0 exact, ``1 - 1/e`` greedy; None: none per instance, e.g.
            a guarantee in expectation only). :func:`tokensel.testing.check_solver` checks it.
        batched: optional batched form (see the module docstring).
        options: the keyword options it accepts (besides ``tol``); None when it takes any.
    """

    name: str
    fn: Callable
    description: str = ""
    guarantee: float | None = None
    batched: Callable | None = None
    options: tuple[str, ...] | None = None

    def check_options(self, options: dict) -> None:
        """Raise ``TypeError`` naming any option this solver does not accept."""
        if self.options is None:  # takes any
            return
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for solver {self.name!r}; accepted: "
                            f"{', '.join(self.options) or 'none'}")


def _keyword_options(fn: Callable) -> tuple[str, ...] | None:
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params[2:] if p.name != "tol" and p.kind is not p.VAR_POSITIONAL)


#: The registered solvers (a :class:`tokensel.registry.Registry`: a taken name is refused).
SOLVERS: Registry[SolverInfo] = Registry("solver", owner=lambda info: owner_of(info.fn))


def _check_args(name: object, guarantee: float | None) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"solver name must be a non-empty str, got {name!r}")
    if guarantee is not None and not 0 < guarantee <= 1:
        raise ValueError(f"guarantee must be None or in (0, 1], got {guarantee}")


def _info(name: str, fn: Callable[..., Any], guarantee: float | None, batched: Callable[..., Any] | None,
          options: tuple[str, ...] | None) -> SolverInfo:
    _check_args(name, guarantee)
    if not callable(fn):
        raise TypeError(f"register_solver expects a function, got {fn!r}")
    doc = inspect.getdoc(fn) or ""
    opts = tuple(options) if options is not None else _keyword_options(fn)
    return SolverInfo(name, fn, doc.splitlines()[0] if doc else "", guarantee, batched, opts)


def register_solver(
    name: str, *, guarantee: float | None = None, batched: Callable[..., Any] | None = None,
    options: tuple[str, ...] | None = None,
) -> Callable[[F], F]:
    """Function decorator that registers a solver under ``name`` (see :class:`SolverInfo`);
    a taken name raises :class:`~tokensel.registry.DuplicateNameError`.

    ``options`` defaults to the keyword parameters of the function after ``objective, k``
    (None, any option, if it takes ``**kwargs``)."""
    _check_args(name, guarantee)

    def decorator(fn: F) -> F:
        SOLVERS.add(name, _info(name, fn, guarantee, batched, options))
        return fn

    return decorator


def unregister_solver(name: str) -> None:
    """Remove the solver registered as ``name`` (tests; plug-ins that clean up)."""
    SOLVERS.remove(name)


@contextmanager
def registered(
    name: str, fn: Callable[..., Any], *, guarantee: float | None = None, batched: Callable[..., Any] | None = None,
    options: tuple[str, ...] | None = None,
) -> Iterator[SolverInfo]:
    """Context manager: ``fn`` registered as the solver ``name`` inside the block only."""
    with SOLVERS.registered(name, _info(name, fn, guarantee, batched, options)) as info:
        yield info


def solver_info(name: str) -> SolverInfo:
    """The :class:`SolverInfo` registered under ``name``;
    :class:`~tokensel.registry.UnknownNameError` listing the registered ones otherwise."""
    return SOLVERS.lookup(name)


def list_solvers() -> list[str]:
    """Sorted names of the registered solvers (accepted by :func:`tokensel.maximize`)."""
    return SOLVERS.names()
