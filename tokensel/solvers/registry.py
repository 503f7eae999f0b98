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
from dataclasses import dataclass
from typing import Callable, TypeVar

__all__ = ["SolverInfo", "register_solver", "unregister_solver", "solver_info", "list_solvers"]

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
        unknown = sorted(set(options) - set(self.options)) if self.options is not None else []
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for solver {self.name!r}; accepted: "
                            f"{', '.join(self.options) or 'none'}")


def _keyword_options(fn: Callable) -> tuple[str, ...] | None:
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params[2:] if p.name != "tol" and p.kind is not p.VAR_POSITIONAL)


_SOLVERS: dict[str, SolverInfo] = {}


def register_solver(
    name: str, *, guarantee: float | None = None, batched: Callable | None = None,
    options: tuple[str, ...] | None = None,
) -> Callable[[F], F]:
    """Function decorator that registers a solver under ``name`` (see :class:`SolverInfo`).

    ``options`` defaults to the keyword parameters of the function after ``objective, k``
    (None, any option, if it takes ``**kwargs``)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"solver name must be a non-empty str, got {name!r}")
    if guarantee is not None and not 0 < guarantee <= 1:
        raise ValueError(f"guarantee must be None or in (0, 1], got {guarantee}")

    def decorator(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"register_solver expects a function, got {fn!r}")
        if name in _SOLVERS:
            raise ValueError(f"a solver named {name!r} is already registered ({_SOLVERS[name].fn.__name__})")
        doc = inspect.getdoc(fn) or ""
        opts = tuple(options) if options is not None else _keyword_options(fn)
        _SOLVERS[name] = SolverInfo(name, fn, doc.splitlines()[0] if doc else "", guarantee, batched, opts)
        return fn

    return decorator


def unregister_solver(name: str) -> None:
    """Remove the solver registered as ``name`` (tests; plug-ins that clean up)."""
    if name not in _SOLVERS:
        raise ValueError(f"no solver named {name!r} is registered; registered: {', '.join(list_solvers())}")
    del _SOLVERS[name]


def solver_info(name: str) -> SolverInfo:
    """The :class:`SolverInfo` registered under ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"solver must be a str naming a registered solver, got {type(name).__name__}")
    try:
        return _SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown solver name {name!r}; available: {', '.join(list_solvers())}") from None


def list_solvers() -> list[str]:
    """Sorted names of the registered solvers (accepted by :func:`tokensel.maximize`)."""
    return sorted(_SOLVERS)
