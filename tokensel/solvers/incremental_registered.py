"""The ``incremental`` solver: the batched incremental greedy as a registered solver.

For facility-location-type objectives it makes the plain greedy's picks (see
:func:`~tokensel.solvers.incremental.incremental_greedy`); its batched form runs all rows of
a batch's coverage ``[B, R, n]`` in one call, which is how ``mmtok`` selects.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokensel.objectives.base import CoverageObjective
from tokensel.solvers.consistency import checked_blocks
from tokensel.solvers.incremental import check_backend, incremental_greedy
from tokensel.solvers.solution import Solution
from tokensel.workspace import Workspace

__all__ = ["incremental_solver", "incremental_batched"]


def incremental_solver(objective: CoverageObjective, k: int, *, tol: float | None = None, backend: str = "auto") -> Solution:
    """Incremental exact greedy for facility-location objectives (same picks as naive)."""
    mode = check_backend(backend)
    blocks = checked_blocks(objective)
    if blocks is None:
        raise ValueError(
            f"solver 'incremental' needs a facility-location-type objective (coverage_blocks()), "
            f"got {type(objective).__name__}; use 'lazy'"
        )
    dtype = blocks[0][0].dtype
    for C, _ in blocks[1:]:
        dtype = torch.promote_types(dtype, C.dtype)
    device = blocks[0][0].device
    idx, gains = incremental_greedy(
        [(C.to(device, dtype).unsqueeze(0), float(w)) for C, w in blocks], k,
        objective.exclude.to(device).unsqueeze(0), tol, backend=mode,
    )
    keep = idx[0] >= 0
    return Solution(indices=idx[0][keep].cpu(), value=float("nan"), gains=gains[0][keep].cpu(), solver="incremental")


def incremental_batched(
    blocks: list[tuple[Tensor, float]], k: int, blocked: Tensor, *, workspace: Workspace | None = None,
    backend: str = "auto",
) -> Tensor:
    """Long ``[B, k]`` picks of the incremental greedy on blocks ``(C [B, R, n] >= 0, w)``,
    ``blocked`` bool ``[B, n]`` (each row with at least k unblocked)."""
    indices, _ = incremental_greedy(blocks, k, blocked, workspace=workspace, with_gains=False,
                                    backend=check_backend(backend))
    return indices
