"""``tokensel bench [solvers | selection | flops | prefill] [args]``: timing benchmarks.

* ``tokensel bench [--peers | --device ...]``: MMTok selection against a dense reference greedy
  and, with ``--peers``, facility location against apricot and submodlib
  (:mod:`tokensel.bench.selection`);
* ``tokensel bench solvers``: stochastic against lazy greedy on random facility-location
  instances (:mod:`tokensel.bench.solvers`);
* ``tokensel bench selection``: every registered selector as an operator at the MMTok paper's
  Table 13 shapes, with the paper's A6000 figures beside MMTok's (:mod:`tokensel.bench.operators`);
* ``tokensel bench flops``: the cost ledger's analytic FLOPs against torch's FlopCounterMode,
  stage by stage, on every model family (:mod:`tokensel.bench.flops`);
* ``tokensel bench prefill``: end-to-end prefill time of a random mid-size LLaVA-architecture
  model at a few budgets (:mod:`tokensel.bench.prefill`).
"""

from __future__ import annotations

import importlib

__all__ = ["BENCHMARKS", "main"]

#: ``tokensel bench NAME``: the module whose ``main(argv)`` runs it.
BENCHMARKS = {"solvers": "tokensel.bench.solvers", "prefill": "tokensel.bench.prefill",
              "selection": "tokensel.bench.operators", "flops": "tokensel.bench.flops"}


def main(argv: list[str] | None = None) -> int:
    """Run ``tokensel bench``; a first argument naming a :data:`BENCHMARKS` entry picks it."""
    argv = list(argv or [])
    if argv and argv[0] in BENCHMARKS:
        return importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:])
    return importlib.import_module("tokensel.bench.selection").main(argv)
