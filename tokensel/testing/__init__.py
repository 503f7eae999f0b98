"""Test tools for tokensel methods, usable from any pytest suite (needs ``hypothesis``; the
``test`` extra installs it).

- :mod:`~tokensel.testing.strategies`: hypothesis strategies for TokenBatches (batched,
  masked, excluded, ragged text, dtypes), coverage matrices and objective instances;
- :func:`check_objective`: f(empty) = 0, monotone, submodular, gains = value differences,
  ``coverage_blocks`` = ``value``, greedy >= (1 - 1/e) OPT, with a shrunk counterexample;
- :func:`check_selector`: the :class:`~tokensel.Selector` contract on random batches;
- :func:`check_solver`: a registered solver against brute force;
- :func:`tiny_vlm`: tiny real ``transformers`` VLMs with processors, built offline;
- :func:`image_alone`: one row of a batch as the image alone.

Example::

    from tokensel.testing import check_objective, check_selector

    def test_my_objective():
        check_objective(lambda g: MyObjective(torch.rand(6, 8, generator=g)))

    def test_my_selector():
        check_selector(tokensel.ObjectiveSelector(my_objective_fn))
"""

from __future__ import annotations

import importlib
from typing import Any

from tokensel.selectors.rows import image_alone

__all__ = [
    "GREEDY_RATIO",
    "check_objective",
    "check_selector",
    "check_solver",
    "image_alone",
    "rand_image",
    "strategies",
    "tiny_vlm",
    "Tiny",
]

_LAZY = {
    "check_objective": "tokensel.testing.objective_checks",
    "GREEDY_RATIO": "tokensel.testing.objective_checks",
    "check_selector": "tokensel.testing.selector_checks",
    "check_solver": "tokensel.testing.solver_checks",
    "tiny_vlm": "tokensel.testing.tiny_vlms",
    "rand_image": "tokensel.testing.tiny_vlms",
    "Tiny": "tokensel.testing.tiny_vlms",
}


def __getattr__(name: str) -> Any:
    if name == "strategies":
        return importlib.import_module("tokensel.testing.strategies")
    if name not in _LAZY:
        raise AttributeError(f"module 'tokensel.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
