"""Solvers that maximise a :class:`~tokensel.objectives.CoverageObjective` under a budget k.

``maximize(objective, k, solver=...)`` (:mod:`tokensel.solvers.run`) is the one entry point; ``list_solvers()`` names the
registered solvers, and :func:`register_solver` adds one. Built in:

- ``naive``: plain greedy (incremental exact greedy for facility-location objectives);
- ``lazy``: Minoux's lazy greedy, same picks as ``naive``;
- ``incremental``: the batched incremental greedy of :mod:`tokensel.solvers.incremental`
  (facility-location objectives only; what ``mmtok`` runs), same picks as ``naive``;
- ``stochastic``: stochastic greedy, seeded (on CPU facility-location objectives a compiled loop
  that evaluates only the sampled candidates whose stale gain could still win: the same picks);
- ``ilp``: exact MILP (HiGHS) for weighted sums of facility-location blocks and modular
  terms, with a time limit;
- ``brute``: exhaustive search, tiny n.

Solvers that use ``coverage_blocks()`` (the incremental greedy, ``ilp``) check the blocks
against the objective's ``gains``/``value`` once first (:func:`checked_blocks`).

The built-in solvers (:mod:`tokensel.solvers.builtin`) are registered with :func:`register_solver` and return a
:class:`Solution`, exactly as third-party solvers do; :func:`maximize` checks every solver's
result the same way and recomputes its ``value``.
"""

import tokensel.solvers.builtin  # noqa: F401  (runs every built-in @register_solver)
from tokensel.solvers.consistency import checked_blocks
from tokensel.solvers.greedy import stochastic_sample_size
from tokensel.solvers.incremental import BACKENDS as INCREMENTAL_BACKENDS
from tokensel.solvers.incremental import dense_greedy, incremental_greedy
from tokensel.solvers.registry import (
    SOLVERS,
    SolverInfo,
    list_solvers,
    register_solver,
    registered,
    solver_info,
    unregister_solver,
)
from tokensel.solvers.run import maximize
from tokensel.solvers.solution import Solution

__all__ = [
    "INCREMENTAL_BACKENDS",
    "SOLVERS",
    "Solution",
    "SolverInfo",
    "checked_blocks",
    "dense_greedy",
    "incremental_greedy",
    "list_solvers",
    "maximize",
    "register_solver",
    "registered",
    "solver_info",
    "stochastic_sample_size",
    "unregister_solver",
]
