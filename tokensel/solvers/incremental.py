"""Exact greedy for facility-location objectives with incremental gain updates, batched.

For f(S) = sum_r max_{j in S} C[r, j] (C >= 0) the marginal gain of column j given the per-row
best coverage ``best`` is ``g_j = sum_r max(0, C[r, j] - best_r)``. After picking column ``p``
only the rows with ``C[r, p] > best_r`` change, and for those the gain of column j drops by

    max(0, min(C[r, j], C[r, p]) - best_r).

One greedy run therefore costs one pass over C for the initial gains plus, per step, work
proportional to the rows that changed (summed over a run: a few passes), instead of k full
passes.

The picks are those of the plain greedy (:func:`dense_greedy`, computed in C's dtype, first
index on ties), bit for bit: the incrementally updated gains carry a rounding error that is
tracked as a bound, and whenever the runner-up comes within that bound of the top, the step
is decided by the plain greedy's own gain computation (one full pass), which also refreshes
the gains. Original implementations run in float32, so among near-equal gains their picks
follow float32 rounding; this reproduces them. On one image (the common case) the near-tie
decision recomputes only the columns inside the window, when that is known to give the plain
computation's bits (see :func:`column_subsets_reproduce`), instead of every column.

Two backends run this algorithm. On CPU, for one block of weight 1 (what ``mmtok`` and
``maximize`` on a facility location run), the whole loop is compiled
(:mod:`tokensel.solvers.compiled_greedy`): per-step cost is then the arithmetic alone. Elsewhere
eager torch runs it: all B rows of a batch advance together, no Python loop over the batch, no
host transfer of data (a few scalar syncs per step), workspaces allocated once, so the same code
runs on CUDA. Both make the same picks.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import Tensor

from tokensel.solvers.compiled_greedy import compiled_greedy, compiled_greedy_available
from tokensel.workspace import Workspace

__all__ = ["incremental_greedy", "dense_greedy", "plain_gains", "column_subsets_reproduce", "BACKENDS"]

Backend = Literal["auto", "compiled", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "compiled", "torch")

# Window around the top gain, in units of eps(dtype). The incremental gains' error stays within a
# few eps of the largest gain at the last refresh (float sums of non-negative terms, each step
# removing part of that mass: 2.4 eps measured at worst over MMTok-shaped runs), the plain
# greedy's own within a few eps of the top gain (3.6 eps measured). The window exceeds twice
# their sum with a margin; within it the plain greedy's own computation decides.
_SCALE_UNITS = 16.0
_TOP_UNITS = 16.0


# Column block of the near-tie recomputation: torch's CPU kernels sum a [R, n] matrix over its
# rows in vectorised groups of columns, so a column's sum comes out bit-identical when it is
# computed in a [R, 32] gather only if n and 32 are multiples of the group (checked at run time).
_SUBSET_WIDTH = 32


@functools.cache
def column_subsets_reproduce(device_type: str, dtype: torch.dtype) -> bool:
    """Whether, on this device and dtype, the plain gains of ``_SUBSET_WIDTH`` gathered columns
    are bit-identical to the same columns' gains in a full pass over a matrix whose width is a
    multiple of ``_SUBSET_WIDTH``. Checked once per process on random data (8 subsets of a
    ``[301, 128]`` matrix): where the reduction groups columns differently (another vector width,
    another device), about a tenth of such sums differ in the last bit, so the check fails and
    the near-tie steps fall back to the full recomputation."""
    gen = torch.Generator().manual_seed(0)
    C = torch.rand(301, 128, generator=gen).pow(4).to(device_type, dtype)
    best = (torch.rand(301, generator=gen) * 0.3).to(device_type, dtype)
    full = (C - best[:, None]).clamp(min=0).sum(dim=0)
    for _ in range(8):
        cols = torch.randperm(128, generator=gen)[:_SUBSET_WIDTH].to(device_type)
        if not torch.equal((C[:, cols] - best[:, None]).clamp(min=0).sum(dim=0), full[cols]):
            return False
    return True


def _widen(blocks: list[tuple[Tensor, float]]) -> list[tuple[Tensor, float]]:
    """The blocks, detached, with 16-bit matrices in float32 (their column sums overflow float16)."""
    return [(C.detach().float() if C.dtype in (torch.float16, torch.bfloat16) else C.detach(), w) for C, w in blocks]


def _check_blocks(blocks: list[tuple[Tensor, float]]) -> tuple[int, int, torch.device, torch.dtype]:
    if not blocks:
        raise ValueError("blocks must hold at least one (C, weight) pair")
    B, _, n = blocks[0][0].shape
    dtype = blocks[0][0].dtype
    for i, (C, w) in enumerate(blocks):
        if C.dim() != 3 or C.shape[0] != B or C.shape[2] != n:
            raise ValueError(f"blocks[{i}] must have shape [B={B}, R, n={n}], got {tuple(C.shape)}")
        if C.dtype != dtype or C.device != blocks[0][0].device:
            raise ValueError("all blocks must share one dtype and device")
        if w < 0:
            raise ValueError(f"blocks[{i}] has negative weight {w}")
    return B, n, blocks[0][0].device, dtype


def plain_gains(
    blocks: list[tuple[Tensor, float]], best: list[Tensor], work: list[Tensor] | None = None
) -> Tensor:
    """The plain greedy's gains ``sum_i w_i sum_r max(0, C_i[b, r, j] - best_i[b, r])``, ``[B, n]``,
    computed in the blocks' dtype exactly as a dense implementation computes them (``work``:
    optional buffers shaped like each C, to avoid allocating temporaries)."""
    total = None
    for i, ((C, w), bst) in enumerate(zip(blocks, best)):
        if work is None:
            g = (C - bst[:, :, None]).clamp(min=0).sum(dim=1)
        else:
            g = torch.sub(C, bst[:, :, None], out=work[i]).clamp_(min=0).sum(dim=1)
        if w != 1.0:
            g = w * g
        total = g if total is None else total + g
    return total


def incremental_greedy(
    blocks: list[tuple[Tensor, float]],
    k: int,
    blocked: Tensor | None = None,
    tol: float | None = None,
    workspace: Workspace | None = None,
    with_gains: bool = True,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Greedy maximisation of ``sum_i w_i * sum_r max_{j in S} C_i[b, r, j]`` for each b.

    Args:
        blocks: ``(C_i, w_i)`` pairs; ``C_i`` float ``[B, R_i, n]``, non-negative (callers
            validate), one dtype and device, ``w_i >= 0``.
        k: number of picks, ``1 <= k <= n``.
        blocked: bool ``[B, n]``, True = may not be picked. Each row needs >= k unblocked.
        tol: stop a row once its best marginal gain is below ``tol``; its remaining picks are -1.
        workspace: where to take the scratch buffers (one per block, shaped like it) from.
        with_gains: False skips computing the picks' gains (one gather and running max over the
            picked columns) and returns None in their place.
        backend: ``"compiled"``: the whole loop compiled (numba; CPU, float32/float64, one block
            of weight 1, no ``tol``); ``"torch"``: eager torch on any device; ``"auto"``: the
            compiled loop where it applies and numba is installed, else torch. Same picks.

    Returns:
        ``(indices, gains)``: long ``[B, k]`` in pick order and float64 ``[B, k]`` marginal gains
        (the picks and gains of :func:`dense_greedy`); gains are None when ``with_gains=False``.
        16-bit blocks are computed in float32.
    """
    B, n, device, dtype = _check_blocks(blocks)
    blocks = _widen(blocks)
    dtype = blocks[0][0].dtype
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    plain = len(blocks) == 1 and blocks[0][1] == 1.0 and tol is None
    compilable = plain and device.type == "cpu" and dtype in (torch.float32, torch.float64)
    if backend == "compiled" and not (compilable and compiled_greedy_available()):
        raise ValueError(
            "backend='compiled' needs numba and one CPU float32/float64 block of weight 1 without tol; "
            f"got {len(blocks)} block(s), device {device.type}, dtype {dtype}, tol={tol}"
        )
    if backend != "torch" and compilable and compiled_greedy_available():
        return _compiled(blocks[0][0], k, blocked, workspace, with_gains)
    if B == 1 and plain:
        return _single_greedy(blocks[0][0], k, blocked, workspace, with_gains)
    eps = torch.finfo(dtype).eps
    g = torch.zeros(B, n, dtype=torch.float64, device=device)
    for C, w in blocks:
        g.add_(C.sum(dim=1), alpha=w)
    states = [_BlockState(C, w, workspace, f"greedy{i}") for i, (C, w) in enumerate(blocks)]
    if blocked is not None:
        g.masked_fill_(blocked, float("-inf"))
    scale = float(g.max())  # largest gain at the last refresh: the error bound's unit
    # the runner-up is within the window when  second - (1 - eps T) top >= -eps S scale
    margin = torch.tensor([-(1 - eps * _TOP_UNITS), 1.0], dtype=torch.float64, device=device)
    picks: list[Tensor] = []
    active = torch.ones(B, dtype=torch.bool, device=device) if tol is not None else None
    for t in range(k):
        if n - t > 1:
            top2, idx2 = g.topk(2, dim=1)
            top, j = top2[:, 0], idx2[:, 0]
            tied = float((top2 @ margin).max()) >= -eps * _SCALE_UNITS * scale
        else:
            top, j = g.max(dim=1)
            tied = False
        if tied:
            g, scale = _refresh(blocks, states, blocked, picks, g)
            top, j = g.max(dim=1)  # first index among equal values
        if active is not None:
            active &= top >= tol
            if not bool(active.any()):
                break
        jj = j[:, None]
        g.scatter_(1, jj, float("-inf"))
        # finished rows keep being updated (harmlessly); their picks are reported as -1
        picks.append(j if active is None else torch.where(active, j, -1))
        if any([st.pick(jj, g) for st in states]) and t + 1 < k:
            g, scale = _refresh(blocks, states, blocked, picks, g)
    indices = torch.full((B, k), -1, dtype=torch.long, device=device)
    if picks:
        indices[:, : len(picks)] = torch.stack(picks, dim=1)
    if not with_gains:
        return indices, None
    gains = torch.zeros(B, k, dtype=torch.float64, device=device)
    if picks:
        gains[:, : len(picks)] = _pick_gains(blocks, indices[:, : len(picks)])
    return indices, gains


def _refresh_one(rows: Tensor, best: Tensor, g: Tensor, work: Tensor, blocked: Tensor | None, picked) -> float:
    """One image's gains ``g`` ``[n]`` recomputed in place by the plain greedy's own computation
    (``rows`` ``[R, n]``, ``best`` ``[R]``, ``work`` a buffer like rows); -inf on the blocked and
    ``picked`` columns. Returns the largest gain."""
    g.copy_(torch.sub(rows, best[:, None], out=work).clamp_(min=0).sum(dim=0))
    _exclude_(g, blocked, picked)
    return float(g.max())


def _exclude_(g: Tensor, blocked: Tensor | None, picked) -> None:
    """Set one image's gains ``g`` ``[n]`` to -inf on its blocked and ``picked`` columns."""
    if blocked is not None:
        g.masked_fill_(blocked, float("-inf"))
    g[picked] = float("-inf")


def _decide_on_subset(rows: Tensor, best: Tensor, g: Tensor, low: float) -> int:
    """The plain greedy's pick among the columns with ``g >= low`` (which hold it), their gains
    made exact (one image: ``rows`` ``[R, n]``, ``best`` ``[R]``, ``g`` ``[n]``); -1 when they are
    too many for one recomputation block. Valid only where :func:`column_subsets_reproduce`."""
    cand = (g >= low).nonzero().squeeze(1)  # ascending
    c = cand.numel()
    if c > _SUBSET_WIDTH:
        return -1
    padded = torch.cat([cand, cand[:1].expand(_SUBSET_WIDTH - c)]) if c < _SUBSET_WIDTH else cand
    exact = torch.index_select(rows, 1, padded).sub_(best[:, None]).clamp_(min=0).sum(dim=0)[:c]
    g.index_copy_(0, cand, exact.double())
    return int(cand[int(exact.argmax())])  # first index among equal values


def _single_greedy(
    C: Tensor, k: int, blocked: Tensor | None, workspace: Workspace | None, with_gains: bool = True
) -> tuple[Tensor, Tensor | None]:
    """:func:`incremental_greedy` for one row and one block of weight 1 in eager torch: the same
    algorithm with the pick and the window test on the host, which halves the number of tensor
    operations per step (what bounds its speed at a few hundred tokens)."""
    _, R, n = C.shape
    eps = torch.finfo(C.dtype).eps
    rows = C[0].contiguous()
    work = torch.empty(R, n, dtype=C.dtype, device=C.device) if workspace is None else workspace.get("greedy0", (R, n), C.dtype, C.device)
    best = torch.zeros(R, dtype=C.dtype, device=C.device)
    g = rows.sum(dim=0).double()
    blocked_row = None if blocked is None else blocked[0]
    if blocked_row is not None:
        g.masked_fill_(blocked_row, float("-inf"))
    picks: list[int] = []
    subsets = n % _SUBSET_WIDTH == 0 and column_subsets_reproduce(C.device.type, C.dtype)
    scale = float(g.max())
    column = torch.empty(R, dtype=C.dtype, device=C.device)
    for t in range(k):
        if n - t > 1:
            top2, idx2 = g.topk(2)
            (top, second), (j, _) = top2.tolist(), idx2.tolist()
            low = top - eps * (_TOP_UNITS * abs(top) + _SCALE_UNITS * scale)
            if second >= low:
                # every column outside [low, top] is below the winner's plain gain (the window
                # exceeds twice both error bounds), so only those inside need their plain gains
                j = _decide_on_subset(rows, best, g, low) if subsets else -1
                if j < 0:
                    scale = _refresh_one(rows, best, g, work, blocked_row, picks)
                    j = int(g.argmax())  # first index among equal values
        else:
            j = int(g.argmax())
        picks.append(j)
        g[j] = float("-inf")
        if t + 1 == k:
            break
        col = column.copy_(rows[:, j])  # one strided pass; the uses below read it contiguously
        if t == 0:
            # best is still 0, so every gain drops by sum_r min(C[r, j'], C[r, j]): one dense
            # update (3 passes over C) instead of a refresh (5)
            g.sub_(torch.minimum(rows, col[:, None], out=work).sum(dim=0))
            best.copy_(col)
            continue
        changed = (col > best).nonzero().squeeze(1)
        if 2 * changed.numel() > R:
            torch.maximum(best, col, out=best)
            scale = _refresh_one(rows, best, g, work, blocked_row, picks)
        elif changed.numel():
            new = col.index_select(0, changed)
            buf = torch.index_select(rows, 0, changed, out=work[: changed.numel()])
            torch.minimum(buf, new.unsqueeze(1), out=buf)
            buf.sub_(best.index_select(0, changed).unsqueeze(1)).clamp_(min=0)
            g.sub_(buf.sum(dim=0))
            torch.maximum(best, col, out=best)
    indices = torch.tensor(picks, dtype=torch.long, device=C.device)
    if not with_gains:
        return indices[None], None
    cover = rows.index_select(1, indices).cummax(dim=1).values.sum(dim=0, dtype=torch.float64)
    gains = torch.diff(cover, prepend=cover.new_zeros(1))
    return indices[None], gains[None]


def _compiled(
    C: Tensor, k: int, blocked: Tensor | None, workspace: Workspace | None, with_gains: bool
) -> tuple[Tensor, Tensor | None]:
    """:func:`incremental_greedy` for one block of weight 1 on CPU, as one compiled loop (see
    :mod:`tokensel.solvers.compiled_greedy`); near ties are decided here, in torch, exactly as
    the eager path decides them."""
    B, R, n = C.shape
    C = C.detach().contiguous()  # selection is not differentiable; numpy views need no grad
    subsets = B == 1 and n % _SUBSET_WIDTH == 0 and column_subsets_reproduce("cpu", C.dtype)

    def work() -> Tensor:
        if workspace is None:
            return torch.empty(B, R, n, dtype=C.dtype)
        return workspace.get("greedy0", (B * R, n), C.dtype, C.device).view(B, R, n)

    def decide(b: int, best: Tensor, g: Tensor, picks: Tensor, t: int, low: float) -> int:
        if B == 1:
            j = _decide_on_subset(C[0], best[0], g[0], low) if subsets else -1
            if j < 0:
                _refresh_one(C[0], best[0], g[0], work()[0], None if blocked is None else blocked[0], picks[0, :t])
                j = int(g[0].argmax())
            return j
        # the batch's plain gains in one pass, as dense_greedy computes them (same shapes: same bits)
        gb = g[b].copy_(plain_gains([(C, 1.0)], [best], [work()])[b])
        _exclude_(gb, None if blocked is None else blocked[b], picks[b, :t])
        return int(gb.argmax())

    indices = compiled_greedy(C, k, blocked, _TOP_UNITS, _SCALE_UNITS, decide)
    if not with_gains:
        return indices, None
    return indices, _pick_gains([(C, 1.0)], indices)


def _refresh(
    blocks: list[tuple[Tensor, float]], states: list["_BlockState"], blocked: Tensor | None, picks: list[Tensor], g: Tensor
) -> tuple[Tensor, float]:
    """Recompute all gains with the plain greedy's own computation; return them and their max."""
    B, n = g.shape
    taken = torch.zeros(B, n, dtype=torch.bool, device=g.device) if blocked is None else blocked.clone()
    if picks:
        taken.scatter_(1, torch.stack(picks, dim=1).clamp_min(0), True)
    exact = plain_gains(blocks, [st.best.view(B, -1) for st in states], [st.work.view_as(C) for st, (C, _) in zip(states, blocks)])
    g.copy_(exact.double().masked_fill_(taken, float("-inf")))
    return g, float(g.max())


def _pick_gains(blocks: list[tuple[Tensor, float]], picks: Tensor) -> Tensor:
    """float64 ``[B, s]`` marginal gain of each pick (``-1`` = none: gain 0), from the picked
    columns alone: the coverage after t picks is a running max over them."""
    valid = picks >= 0
    total = None
    for C, w in blocks:
        cols = C.gather(2, picks.clamp_min(0)[:, None, :].expand(-1, C.shape[1], -1))  # [B, R, s]
        cols = cols.masked_fill(~valid[:, None, :], 0).cummax(dim=2).values
        cover = cols.sum(dim=1, dtype=torch.float64)  # [B, s]
        part = torch.diff(cover, dim=1, prepend=torch.zeros_like(cover[:, :1])) * w
        total = part if total is None else total + part
    return total.masked_fill_(~valid, 0.0)


class _BlockState:
    """One coverage block ``C`` ``[B, R, n]`` (weight ``w``), its per-row best coverage and a
    workspace shaped like C (allocated once per run)."""

    def __init__(self, C: Tensor, w: float, workspace: Workspace | None, name: str) -> None:
        B, R, n = C.shape
        self.w, self.B, self.R, self.n = float(w), B, R, n
        self.rows = C.contiguous().view(B * R, n)
        self.best = torch.zeros(B * R, dtype=C.dtype, device=C.device)
        self.col_index = (torch.arange(B * R, device=C.device) * n).view(B, R)
        if workspace is None:
            self.work = torch.empty(B * R, n, dtype=C.dtype, device=C.device)
        else:
            self.work = workspace.get(name, (B * R, n), C.dtype, C.device)
        self.acc = torch.empty(B, n, dtype=C.dtype, device=C.device) if B > 1 else None
        self.first = True  # no pick yet: best is 0 everywhere

    def pick(self, j: Tensor, g: Tensor) -> bool:
        """Column ``j[b, 0]`` joins row b's set: lower the gains ``g`` ``[B, n]`` (float64) in place.

        Returns True, leaving ``g`` stale, when more than half of the rows changed: a full
        recomputation of the gains is then cheaper (and exact)."""
        if self.B == 1:
            col = self.rows[:, int(j)]  # a strided view: no gather
        else:
            col = self.rows.view(-1).take(self.col_index + j).view(-1)  # [B * R]
        if self.first:
            # best is still 0: every gain drops by sum_r min(C[b, r, j'], C[b, r, j[b]]); one
            # dense update (3 passes over C) instead of a refresh (5)
            self.first = False
            low = torch.minimum(self.rows.view(self.B, self.R, self.n), col.view(self.B, self.R, 1),
                                out=self.work.view(self.B, self.R, self.n))
            g.sub_(low.sum(dim=1), alpha=self.w)
            self.best.copy_(col)
            return False
        changed = (col > self.best).nonzero().squeeze(1)
        if 2 * changed.numel() > self.best.numel():
            torch.maximum(self.best, col, out=self.best)
            return True
        if changed.numel() == 0:
            return False
        new = col.index_select(0, changed)
        buf = self.work[: changed.numel()]
        torch.index_select(self.rows, 0, changed, out=buf)
        torch.minimum(buf, new.unsqueeze(1), out=buf)
        buf.sub_(self.best.index_select(0, changed).unsqueeze(1)).clamp_(min=0)
        if self.acc is None:
            g[0].sub_(buf.sum(dim=0), alpha=self.w)
        else:
            self.acc.zero_().index_add_(0, torch.div(changed, self.R, rounding_mode="floor"), buf)
            g.sub_(self.acc, alpha=self.w)
        torch.maximum(self.best, col, out=self.best)
        return False


def dense_greedy(
    blocks: list[tuple[Tensor, float]], k: int, blocked: Tensor | None = None, tol: float | None = None
) -> tuple[Tensor, Tensor]:
    """The plain greedy: every step recomputes all gains from the full matrices (in their dtype),
    takes the argmax (first index on ties). The reference :func:`incremental_greedy` reproduces.
    16-bit blocks are computed in float32.
    """
    B, n, device, dtype = _check_blocks(blocks)
    blocks = _widen(blocks)
    dtype = blocks[0][0].dtype
    best = [torch.zeros(C.shape[:2], dtype=dtype, device=device) for C, _ in blocks]
    taken = torch.zeros(B, n, dtype=torch.bool, device=device)
    if blocked is not None:
        taken |= blocked
    indices = torch.full((B, k), -1, dtype=torch.long, device=device)
    gains = torch.zeros(B, k, dtype=torch.float64, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for t in range(k):
        g = plain_gains(blocks, best).double().masked_fill_(taken, float("-inf"))
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
                bst[b] = torch.maximum(bst[b], C[b, :, j[b]])
    return indices, gains
