"""Average pooling over the patch grid: each kept token is the mean of one spatial cell."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tokensel.batch import Selection, TokenBatch
from tokensel.ops import available_in_order
from tokensel.selectors.base import Selector
from tokensel.selectors.registration import register_selector

__all__ = ["PoolSelector", "UniformSelector", "cell_pooling", "grid_cells", "infer_grid"]


def infer_grid(n: int, grid: tuple[int, int] | None) -> tuple[int, int]:
    """The patch grid: ``grid`` if given, else a square one when n is a square, else one row."""
    if grid is not None:
        return int(grid[0]), int(grid[1])
    s = math.isqrt(n)
    return (s, s) if s * s == n else (1, n)


def grid_cells(h: int, w: int, k: int) -> Tensor:
    """long ``[h * w]``: the cell (0..k-1) of each patch when an h x w grid is cut into k cells:
    ``kh`` horizontal bands, each cut into nearly equal numbers of columns so that the cells
    total k. Cell ids run in raster order of the cells."""
    kh = max(1, min(h, round(math.sqrt(k * h / w))))
    kh = min(kh, k)
    per_band = [k // kh + (1 if i < k % kh else 0) for i in range(kh)]
    row_band = torch.div(torch.arange(h) * kh, h, rounding_mode="floor")
    cell_start = torch.tensor([0] + per_band[:-1]).cumsum(0)
    cols = torch.tensor(per_band)[row_band]  # [h]
    col_cell = torch.div(torch.arange(w)[None, :] * cols[:, None], w, rounding_mode="floor")  # [h, w]
    return (cell_start[row_band][:, None] + col_cell).flatten()


def cell_pooling(batch: TokenBatch, k: int) -> Selection:
    """Cut the grid into k cells (:func:`grid_cells`) and return, per row of a validated batch,
    the cell means as merge ``weights`` ``[B, k, n]`` and at ``indices`` each cell's pickable
    patch nearest its centroid, sorted ascending.

    When a cell holds no pickable token (e.g. all padding), or the grid has one row, the row
    falls back to runs of consecutive pickable tokens in raster order.
    """
    B, n, _ = batch.vision.shape
    device = batch.vision.device
    h, w = infer_grid(n, batch.grid)
    ok = ~batch.blocked()
    cells = grid_cells(h, w, k).to(device) if k <= h * w and h > 1 else None
    if cells is None or int(cells.max()) + 1 != k:
        assign = _runs(ok, k)
    else:
        assign = cells.expand(B, n).clone()
        empty = torch.zeros(B, k, dtype=torch.long, device=device).scatter_add_(1, assign, ok.long()) == 0
        bad = empty.any(dim=1)
        if bool(bad.any()):
            assign[bad] = _runs(ok[bad], k)
    member = torch.nn.functional.one_hot(assign, k).transpose(1, 2) * ok[:, None, :]  # long [B, k, n]
    weights = member.float() / member.sum(dim=2, keepdim=True).float()
    rep = _nearest_to_centroid(member, w)  # [B, k]
    rep, perm = rep.sort(dim=1)
    weights = weights.gather(1, perm[..., None].expand(B, k, n))
    return Selection(indices=rep, weights=weights)


def _nearest_to_centroid(member: Tensor, w: int) -> Tensor:
    """long ``[B, k]``: for each cell (``member`` 0/1 long ``[B, k, n]`` over a grid of width w)
    its member patch nearest the cell's centroid, the lowest index on ties. Integer arithmetic
    (squared distances times the squared member count), so exact: a centroid exactly between
    two patches picks the same one in any batch, on any CPU."""
    n = member.shape[2]
    pos = torch.arange(n, device=member.device)
    ys, xs = pos // w, pos % w
    count = member.sum(dim=2, keepdim=True)  # [B, k, 1]
    sy = (member * ys).sum(dim=2, keepdim=True)
    sx = (member * xs).sum(dim=2, keepdim=True)
    dist = (ys * count - sy) ** 2 + (xs * count - sx) ** 2  # [B, k, n]
    dist.masked_fill_(member == 0, torch.iinfo(torch.long).max)
    return dist.argmin(dim=2)


def _runs(ok: Tensor, k: int) -> Tensor:
    """Assign pickable tokens to k runs of consecutive pickable tokens; blocked ones to run 0
    (their weight is zero anyway)."""
    order, count = available_in_order(~ok)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=ok.device).expand_as(order))
    run = torch.div(rank * k, count[:, None].clamp_min(1), rounding_mode="floor").clamp_max(k - 1)
    return torch.where(ok, run, torch.zeros_like(run))


@register_selector("pool", description="Average pooling: k grid cells, each kept token the mean of its cell.")
class PoolSelector(Selector):
    """Merge tokens by average pooling: the grid is cut into k cells, each kept token is the
    mean of a cell's pickable tokens, placed at the cell's patch nearest its centroid.

    When a cell holds no pickable token (e.g. all padding) the row falls back to pooling runs
    of consecutive pickable tokens in raster order. Returns ``Selection.weights`` (the pooling
    matrix).
    """

    def select(self, batch: TokenBatch, k: int) -> Selection:
        return cell_pooling(batch, k)


@register_selector("uniform", description="k tokens spread evenly over the patch grid (one per cell of k near-equal cells).")
class UniformSelector(Selector):
    """k tokens spread evenly over the patch grid: the grid is cut into k near-equal cells
    (bands of rows, each cut into columns) and each cell's pickable patch nearest its centroid
    is kept. The spatially regular sampling baseline (``pool`` without the merging)."""

    def select(self, batch: TokenBatch, k: int) -> Selection:
        return Selection(indices=cell_pooling(batch, k).indices)
