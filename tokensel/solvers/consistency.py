"""Check, once per objective, that its ``coverage_blocks()`` describe the same function as its
``gains()`` and ``value()``, before a solver relies on the blocks.

Solvers that use the blocks (the incremental greedy behind ``naive``/``lazy``/``incremental``,
and ``ilp``) never call ``gains``; blocks that disagree would make them optimise another
function than the one the generic solvers see, silently. The check costs one pass over the
blocks: the empty set's gains against the blocks' weighted column sums, and f on three
candidates against the blocks' value of the same set. A :class:`FacilityLocation` whose set
function is the class's own (no method overridden; possibly inside :class:`Restricted`
wrappers) describes its blocks by construction and is not checked: that pass would cost more
than the incremental greedy run it precedes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tokensel.objectives.base import CoverageObjective
from tokensel.objectives.facility_location import FacilityLocation
from tokensel.objectives.restricted import Restricted

__all__ = ["checked_blocks", "blocks_value", "blocks_by_construction"]

_CHECKED = "_tokensel_blocks_checked"
_SET_FUNCTION = ("value", "initial_state", "gains", "update", "coverage_blocks")


def blocks_by_construction(objective: CoverageObjective) -> bool:
    """Whether ``objective`` is a :class:`FacilityLocation` with the class's own set function
    (no method overridden in a subclass or on the instance; seen through :class:`Restricted`
    wrappers, which delegate to it): its blocks then describe its ``gains``/``value`` by
    construction."""
    while type(objective) is Restricted and not any(m in vars(objective) for m in _SET_FUNCTION):
        objective = objective.objective
    return isinstance(objective, FacilityLocation) and all(
        getattr(type(objective), m) is getattr(FacilityLocation, m) and m not in vars(objective) for m in _SET_FUNCTION
    )


def blocks_value(blocks: list[tuple[Tensor, float]], indices: list[int]) -> float:
    """f(S) = sum_i w_i sum_r max_{j in S} C_i[r, j] from the blocks (float64; 0 for S empty)."""
    if not indices:
        return 0.0
    return sum(w * float(C[:, indices].double().amax(dim=1).sum()) for C, w in blocks)


def _check_shapes(objective: CoverageObjective, blocks: list) -> None:
    name = type(objective).__name__
    if not isinstance(blocks, list) or not blocks:
        raise ValueError(f"{name}.coverage_blocks() must return None or a non-empty list of (C, weight) pairs")
    for i, block in enumerate(blocks):
        if not (isinstance(block, tuple) and len(block) == 2 and isinstance(block[0], Tensor)):
            raise ValueError(f"{name}.coverage_blocks()[{i}] must be a (Tensor [R, n], weight) pair")
        C, w = block
        if C.dim() != 2 or C.shape[1] != objective.n or not C.is_floating_point():
            raise ValueError(
                f"{name}.coverage_blocks()[{i}] must be a float [R, n={objective.n}] matrix, got "
                f"{tuple(C.shape)} {C.dtype}"
            )
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ValueError(f"{name}.coverage_blocks()[{i}] has weight {w!r}; weights must be finite and >= 0")


def _disagree(a: float, b: float, scale: float, dtype: torch.dtype) -> bool:
    rel = 1e-4 if dtype in (torch.float16, torch.bfloat16) else 1e-5 if dtype == torch.float32 else 1e-9
    return abs(a - b) > rel * max(scale, 1e-300) + 1e-12


def checked_blocks(objective: CoverageObjective) -> list[tuple[Tensor, float]] | None:
    """``objective.coverage_blocks()``, checked against ``gains``/``value`` on first use.

    Raises:
        ValueError: the blocks are malformed, negative, or describe another function.
    """
    blocks = objective.coverage_blocks()
    if blocks is None or getattr(objective, _CHECKED, False) or blocks_by_construction(objective):
        return blocks
    _check_shapes(objective, blocks)
    name = type(objective).__name__
    dtype = blocks[0][0].dtype
    col = torch.zeros(objective.n, dtype=torch.float64)
    for C, w in blocks:
        col += w * C.detach().cpu().sum(dim=0, dtype=torch.float64)  # no float64 copy of C
    if bool((torch.stack([C.detach().amin() for C, _ in blocks]) < 0).any()):
        raise ValueError(f"{name}.coverage_blocks() has negative entries; facility location needs C >= 0")
    gains = objective.gains(objective.initial_state()).detach().double().cpu()
    scale = float(col.abs().max())
    worst = int((gains - col).abs().argmax())
    if _disagree(float(gains[worst]), float(col[worst]), scale, dtype):
        raise ValueError(
            f"{name}.coverage_blocks() disagree with its gains(): the gain of candidate {worst} on the empty set "
            f"is {float(gains[worst]):.9g} from gains() but {float(col[worst]):.9g} from the blocks; solvers that "
            "use the blocks would optimise another function (fix coverage_blocks() or return None)"
        )
    picks = col.argsort(descending=True)[: min(3, objective.n)].tolist()
    from_value, from_blocks = objective.value(picks), blocks_value(blocks, picks)
    if _disagree(from_value, from_blocks, abs(from_value) + abs(from_blocks), dtype):
        raise ValueError(
            f"{name}.coverage_blocks() disagree with its value(): f({sorted(picks)}) is {from_value:.9g} from value() "
            f"but {from_blocks:.9g} from the blocks (fix coverage_blocks() or return None)"
        )
    try:
        setattr(objective, _CHECKED, True)
    except AttributeError:  # objects with __slots__: checked on every use
        pass
    return blocks
