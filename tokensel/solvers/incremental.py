"""Exact greedy for facility-location objectives with incremental gain updates, batched.

For f(S) = sum_r max_{j in S} C[r, j] (C >= 0) the marginal gain of column j given the per-row
best coverage ``best`` is ``g_j = sum_r max(0, C[r, j] - best_r)``. After picking column ``p``
only rows with ``C[r, p] > best_r`` change, and for those the gain of column j drops by

    clamp(C[r, j] - best_r, 0, C[r, p] - best_r).

So one greedy run costs one pass over C for the initial gains plus, per step, work
proportional to the rows that changed, instead of k full passes. Gains are kept in float64,
so the long chain of updates does not drift: every pick is the argmax of the exact gains
(first index on ties, as the plain greedy), up to float64 rounding.

All B rows of a batch advance together: no Python loop over the batch, no host transfer of
data (one small sync per step to size the changed-row set), so the same code runs on CUDA.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["incremental_greedy", "dense_greedy"]

# Gains below this fraction of the largest initial gain count as exactly 0, so that float64
# round-off in a saturated objective does not decide ties that the exact gains leave to the
# first index.
_ZERO_RTOL = 1e-11


def _check_blocks(blocks: list[tuple[Tensor, float]]) -> tuple[int, int, torch.device]:
    if not blocks:
        raise ValueError("blocks must hold at least one (C, weight) pair")
    B, _, n = blocks[0][0].shape
    for i, (C, w) in enumerate(blocks):
        if C.dim() != 3 or C.shape[0] != B or C.shape[2] != n:
            raise ValueError(f"blocks[{i}] must have shape [B={B}, R, n={n}], got {tuple(C.shape)}")
        if w < 0:
            raise ValueError(f"blocks[{i}] has negative weight {w}")
    return B, n, blocks[0][0].device


def _row_chunk(C: Tensor) -> int:
    # A chunk's gathered rows plus their float64 copy stay no larger than C itself.
    return max(1, C.numel() * C.element_size() // ((C.element_size() + 8) * C.shape[2]))


def incremental_greedy(
    blocks: list[tuple[Tensor, float]],
    k: int,
    blocked: Tensor | None = None,
    tol: float | None = None,
    ties: str = "exact",
    tie_rtol: float = 4e-6,
) -> tuple[Tensor, Tensor]:
    """Greedy maximisation of ``sum_i w_i * sum_r max_{j in S} C_i[b, r, j]`` for each b.

    Args:
        blocks: ``(C_i, w_i)`` pairs; ``C_i`` float ``[B, R_i, n]``, non-negative (not checked
            here: callers validate), ``w_i >= 0``.
        k: number of picks, ``1 <= k <= n``.
        blocked: bool ``[B, n]``, True = may not be picked. Each row needs >= k unblocked.
        tol: stop a row once its best marginal gain is below ``tol``; its remaining picks are -1.
        ties: ``"exact"``: take the argmax of the float64 gains. ``"float32"``: reproduce, bit
            for bit, the plain float32 greedy ``argmax_j sum_r max(0, C[r, j] - best_r)`` over a
            single block: whenever several candidates lie within ``tie_rtol`` of the best exact
            gain, their float32 gains are computed exactly as that greedy computes them (one
            full pass) and decide. Original implementations run in float32, and their picks
            among near-equal gains follow its rounding.
        tie_rtol: relative window for ``ties="float32"``; it must exceed float32 summation error.

    Returns:
        ``(indices, gains)``: long ``[B, k]`` in pick order and float64 ``[B, k]`` marginal gains.
    """
    B, n, device = _check_blocks(blocks)
    if ties not in ("exact", "float32"):
        raise ValueError(f"ties must be 'exact' or 'float32', got {ties!r}")
    if ties == "float32" and (len(blocks) != 1 or blocks[0][1] != 1.0):
        raise ValueError("ties='float32' reproduces a greedy over one coverage matrix: pass a single block of weight 1")
    ar = torch.arange(B, device=device)
    g = torch.zeros(B, n, dtype=torch.float64, device=device)
    best = []
    for C, w in blocks:
        step = max(1, C.shape[1] // 2)
        for r0 in range(0, C.shape[1], step):
            g.add_(C[:, r0 : r0 + step].sum(dim=1, dtype=torch.float64), alpha=w)
        best.append(torch.zeros(C.shape[:2], dtype=C.dtype, device=device))
    zero_tol = _ZERO_RTOL * float(g.max())
    if blocked is not None:
        g.masked_fill_(blocked, float("-inf"))
    indices = torch.full((B, k), -1, dtype=torch.long, device=device)
    gains = torch.zeros(B, k, dtype=torch.float64, device=device)
    active = torch.ones(B, dtype=torch.bool, device=device) if tol is not None else None
    rows = ar
    for t in range(k):
        top, j = g.max(dim=1)
        if ties == "float32":
            j = _float32_tie_break(blocks[0][0], best[0], g, top, j, tie_rtol, zero_tol)
            top = g.gather(1, j[:, None])[:, 0]
        if active is not None:
            active &= top >= tol
            if not bool(active.any()):
                break
            rows = ar[active]
            j = torch.where(active, j, -1)
            top = torch.where(active, top, 0.0)
        indices[:, t] = j
        gains[:, t] = top
        if t == k - 1:
            break
        j = j[rows]
        g[rows, j] = float("-inf")
        for (C, w), bst in zip(blocks, best):
            col = C[rows, :, j]  # [b, R]
            changed = col > bst[rows]
            bi, ri = changed.nonzero(as_tuple=True)
            if bi.numel() == 0:
                continue
            bi_full = rows[bi]
            old = bst[bi_full, ri].double()
            cap = col[bi, ri].double() - old
            chunk = _row_chunk(C)
            for s0 in range(0, bi.numel(), chunk):
                sl = slice(s0, s0 + chunk)
                delta = C[bi_full[sl], ri[sl]].double().sub_(old[sl, None]).clamp_(min=0)
                torch.minimum(delta, cap[sl, None], out=delta)
                g.index_add_(0, bi_full[sl], delta, alpha=-w)
            bst[rows] = torch.maximum(bst[rows], col)
        g.masked_fill_(g.abs() < zero_tol, 0.0)
    return indices, gains


def _float32_tie_break(
    C: Tensor, best: Tensor, g: Tensor, top: Tensor, j: Tensor, rtol: float, atol: float
) -> Tensor:
    """Re-decide the pick of rows whose exact gains have more than one candidate near the top."""
    near = g >= (top - top.abs() * rtol - atol)[:, None]
    tied = near.sum(dim=1) > 1
    if not bool(tied.any()):
        return j
    rows = tied.nonzero().flatten()
    g32 = (C[rows] - best[rows][:, :, None]).clamp_(min=0).sum(dim=1)
    g32.masked_fill_(~near[rows], float("-inf"))
    j = j.clone()
    j[rows] = g32.argmax(dim=1)
    return j


def dense_greedy(
    blocks: list[tuple[Tensor, float]], k: int, blocked: Tensor | None = None, tol: float | None = None
) -> tuple[Tensor, Tensor]:
    """The plain greedy: every step recomputes all gains from the full matrices (float64).

    Same interface and result as :func:`incremental_greedy`; the slow reference it is tested against.
    """
    B, n, device = _check_blocks(blocks)
    best = [torch.zeros(C.shape[:2], dtype=torch.float64, device=device) for C, _ in blocks]
    taken = torch.zeros(B, n, dtype=torch.bool, device=device)
    if blocked is not None:
        taken |= blocked
    indices = torch.full((B, k), -1, dtype=torch.long, device=device)
    gains = torch.zeros(B, k, dtype=torch.float64, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for t in range(k):
        g = torch.zeros(B, n, dtype=torch.float64, device=device)
        for (C, w), bst in zip(blocks, best):
            g += w * (C.double() - bst[:, :, None]).clamp(min=0).sum(dim=1)
        g.masked_fill_(taken, float("-inf"))
        top, j = g.max(dim=1)
        if tol is not None:
            done |= top < tol
            if bool(done.all()):
                break
        for b in range(B):
            if done[b]:
                continue
            indices[b, t] = j[b]
            gains[b, t] = top[b]
            taken[b, j[b]] = True
            for (C, _), bst in zip(blocks, best):
                bst[b] = torch.maximum(bst[b], C[b, :, j[b]].double())
    return indices, gains
