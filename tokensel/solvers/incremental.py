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
is decided by the plain greedy's own gain computation. Original implementations run in
float32, so among near-equal gains their picks follow float32 rounding; this reproduces them. A near tie is decided for the tied image alone
(never a pass over the whole batch), on the aligned column blocks holding the columns inside
the window (:func:`decision_columns`), for any token count, when that is known to give the plain
computation's bits (see :func:`column_subsets_reproduce`), instead of every column;
:func:`near_tie_counts` reports how the near ties were decided.

Two backends run this algorithm. On CPU, for one block of weight 1 (what ``mmtok`` and
``maximize`` on a facility location run), the whole loop is compiled
(:mod:`tokensel.solvers.compiled_greedy`): per-step cost is then the arithmetic alone. Elsewhere
eager torch runs it: all B rows of a batch advance together, no Python loop over the batch
(except over the images tied at a step), no host transfer of data (a few scalar syncs per
step), workspaces allocated once, so the same code runs on CUDA. Both make the same picks.
"""

from __future__ import annotations

import functools
import threading
from typing import Literal, overload

import torch
from torch import Tensor

from tokensel.solvers.compiled_greedy import compiled_greedy, compiled_greedy_available
from tokensel.validation import check_choice
from tokensel.workspace import Workspace

__all__ = [
    "incremental_greedy", "dense_greedy", "plain_gains", "column_subsets_reproduce", "decision_columns",
    "near_tie_counts", "reset_near_tie_counts", "BACKENDS", "Backend", "check_backend",
]

Backend = Literal["auto", "compiled", "torch"]
BACKENDS: tuple[Backend, ...] = ("auto", "compiled", "torch")


def check_backend(backend: object) -> Backend:
    """``backend`` if it is one of :data:`BACKENDS`; ``ValueError`` naming them otherwise."""
    return check_choice("backend", backend, BACKENDS)

# Window around the top gain, in units of eps(dtype). The incremental gains' error stays within a
# few eps of the largest gain at the last refresh (float sums of non-negative terms, each step
# removing part of that mass: 2.4 eps measured at worst over MMTok-shaped runs), the plain
# greedy's own within a few eps of the top gain (3.6 eps measured). The window exceeds twice
# their sum with a margin; within it the plain greedy's own computation decides.
_SCALE_UNITS = 16.0
_TOP_UNITS = 16.0


# Column block of the near-tie recomputation. torch's CPU kernels sum a [R, n] matrix over its rows
# in vectorised groups of columns (32 float32 columns per group here) and sum the last n mod 32
# columns in another order, so a column's sum comes out bit-identical in a smaller matrix only if
# it sits at the same place within its group: gathering whole aligned blocks of 64 columns (a
# multiple of every group width), and the trailing columns as they stand, preserves that.
# Checked at run time (:func:`column_subsets_reproduce`); elsewhere the full pass decides.
_BLOCK = 64


class _NearTieCounts(threading.local):
    """Per thread: how the near-tie steps were decided since the last reset."""

    column_decisions = 0  # on the candidate columns' blocks only
    full_refreshes = 0  # one image's gains recomputed over all its columns


_COUNTS = _NearTieCounts()


def near_tie_counts() -> dict[str, int]:
    """How this thread's near-tie steps were decided since :func:`reset_near_tie_counts`:
    ``column_decisions`` (the candidates' column blocks of one image recomputed) and
    ``full_refreshes`` (all columns of one image recomputed). Diagnostics for tests and benchmarks."""
    return {"column_decisions": _COUNTS.column_decisions, "full_refreshes": _COUNTS.full_refreshes}


def reset_near_tie_counts() -> None:
    """Set this thread's :func:`near_tie_counts` to zero."""
    _COUNTS.column_decisions = _COUNTS.full_refreshes = 0


def decision_columns(cand: Tensor, n: int) -> Tensor:
    """The columns (long, ascending) whose plain gains are recomputed to decide among the
    candidate columns ``cand`` (long ``[c]``, ascending) of an ``n``-column image: every aligned
    block of ``_BLOCK`` columns holding a candidate, plus, when a candidate lies in the trailing
    ``n mod _BLOCK`` columns, those columns (after the last whole block when no other block is
    gathered, so that the gathered matrix is wide enough for the vectorised reduction)."""
    head = n - n % _BLOCK
    blocks = torch.unique(torch.div(cand[cand < head], _BLOCK, rounding_mode="floor"))
    cols = (blocks[:, None] * _BLOCK + torch.arange(_BLOCK, device=cand.device)).flatten()
    if bool((cand >= head).any()):
        start = head - _BLOCK if blocks.numel() == 0 and head >= _BLOCK else head
        cols = torch.cat([cols, torch.arange(start, n, device=cand.device)])
    return cols


def _image_gains(parts: list[tuple[Tensor, float, Tensor]], cols: Tensor | None = None, work: list[Tensor] | None = None) -> Tensor:
    """One image's plain gains in the blocks' dtype, computed as :func:`plain_gains` computes
    them: over all columns (``cols`` None; ``work``: optional buffers shaped like each block) or
    over the gathered columns ``cols``. ``parts``: ``(rows [R_i, n], w_i, best [R_i])``."""
    total = None
    for i, (rows, w, best) in enumerate(parts):
        if cols is not None:
            g = torch.index_select(rows, 1, cols).sub_(best[:, None]).clamp_(min=0).sum(dim=0)
        elif work is None:
            g = (rows - best[:, None]).clamp(min=0).sum(dim=0)
        else:
            g = torch.sub(rows, best[:, None], out=work[i]).clamp_(min=0).sum(dim=0)
        if w != 1.0:
            g = w * g
        total = g if total is None else total + g
    assert total is not None  # there is at least one block
    return total


@functools.cache
def _reproduces(device_type: str, dtype: torch.dtype, threads: int) -> bool:
    gen = torch.Generator().manual_seed(0)
    for n in (192, 193, 199, 207, 225, 255, 40, 5):
        C = torch.rand(2, 301, n, generator=gen, dtype=torch.float64).pow(4).to(device_type, dtype)
        best = (torch.rand(2, 301, generator=gen, dtype=torch.float64) * 0.3).to(device_type, dtype)
        batch = plain_gains([(C, 1.0)], [best])
        for b in range(2):
            parts = [(C[b], 1.0, best[b])]
            if not torch.equal(_image_gains(parts), batch[b]):
                return False
            for _ in range(4):
                cand = torch.randperm(n, generator=gen)[:3].to(device_type).sort().values
                cols = decision_columns(cand, n)
                exact = _image_gains(parts, cols)[torch.searchsorted(cols, cand)]
                if not torch.equal(exact, batch[b, cand]):
                    return False
    return True


def column_subsets_reproduce(device_type: str, dtype: torch.dtype) -> bool:
    """Whether, on this device, dtype and thread count, near ties may be decided image by image
    on the candidates' columns: the plain gains of one image computed alone, and those of the
    :func:`decision_columns` gathered from it, are bit-identical to the same columns' gains in a
    full pass over the batch. Checked once per (device, dtype, threads) on random data (widths
    with and without trailing columns); where reductions group columns differently (another
    device), such sums differ in the last bit, the check fails, and near ties are decided by the
    full pass over the whole batch instead."""
    return _reproduces(device_type, dtype, torch.get_num_threads())


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
    assert total is not None  # there is at least one block
    return total


@overload
def incremental_greedy(
    blocks: list[tuple[Tensor, float]], k: int, blocked: Tensor | None = ..., tol: float | None = ...,
    workspace: Workspace | None = ..., with_gains: Literal[True] = ..., backend: Backend = ...,
) -> tuple[Tensor, Tensor]: ...
@overload
def incremental_greedy(
    blocks: list[tuple[Tensor, float]], k: int, blocked: Tensor | None = ..., tol: float | None = ...,
    workspace: Workspace | None = ..., *, with_gains: Literal[False], backend: Backend = ...,
) -> tuple[Tensor, None]: ...
@overload
def incremental_greedy(
    blocks: list[tuple[Tensor, float]], k: int, blocked: Tensor | None = ..., tol: float | None = ...,
    workspace: Workspace | None = ..., with_gains: bool = ..., backend: Backend = ...,
) -> tuple[Tensor, Tensor | None]: ...
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
    backend = check_backend(backend)
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
    picks = _batched_greedy(blocks, k, blocked, tol, workspace)
    indices = torch.full((B, k), -1, dtype=torch.long, device=device)
    if picks:
        indices[:, : len(picks)] = torch.stack(picks, dim=1)
    if not with_gains:
        return indices, None
    gains = torch.zeros(B, k, dtype=torch.float64, device=device)
    if picks:
        gains[:, : len(picks)] = _pick_gains(blocks, indices[:, : len(picks)])
    return indices, gains


def _batched_greedy(
    blocks: list[tuple[Tensor, float]], k: int, blocked: Tensor | None, tol: float | None, workspace: Workspace | None
) -> list[Tensor]:
    """:func:`incremental_greedy` in eager torch for any blocks: all B images advance together;
    a near tie is decided image by image (see :func:`_decide`). Returns the picks, one long
    ``[B]`` per step (-1 where an image stopped at ``tol``)."""
    B, n, device, dtype = _check_blocks(blocks)
    eps = torch.finfo(dtype).eps
    g = torch.zeros(B, n, dtype=torch.float64, device=device)
    for C, w in blocks:
        g.add_(C.sum(dim=1), alpha=w)
    states = [_BlockState(C, w, workspace, f"greedy{i}") for i, (C, w) in enumerate(blocks)]
    taken = torch.zeros(B, n, dtype=torch.bool, device=device) if blocked is None else blocked.clone()
    g.masked_fill_(taken, float("-inf"))
    per_image = column_subsets_reproduce(device.type, dtype)
    scale = g.amax(dim=1)  # per image, largest gain at its last refresh: the error bound's unit
    # the runner-up is within the window when  second - (1 - eps T) top >= -eps S scale
    margin = torch.tensor([-(1 - eps * _TOP_UNITS), 1.0], dtype=torch.float64, device=device)
    picks: list[Tensor] = []
    active = torch.ones(B, dtype=torch.bool, device=device) if tol is not None else None
    for t in range(k):
        if n - t > 1:
            top2, idx2 = g.topk(2, dim=1)
            top, j = top2[:, 0].clone(), idx2[:, 0].clone()
            tied = (top2 @ margin) >= -eps * _SCALE_UNITS * scale
            if bool(tied.any()):
                if per_image:
                    _decide_batch(states, g, taken, top, j, scale, tied.nonzero().squeeze(1).tolist(), eps)
                else:
                    scale = _refresh(blocks, states, taken, g)
                    _COUNTS.full_refreshes += 1
                    top, j = g.max(dim=1)  # first index among equal values
        else:
            top, j = g.max(dim=1)
        if active is not None and tol is not None:  # active exists exactly when tol is given
            active &= top >= tol
            if not bool(active.any()):
                break
        jj = j[:, None]
        g.scatter_(1, jj, float("-inf"))
        taken.scatter_(1, jj, True)
        # finished rows keep being updated (harmlessly); their picks are reported as -1
        picks.append(j if active is None else torch.where(active, j, -1))
        if any([st.pick(jj, g) for st in states]) and t + 1 < k:
            scale = _refresh(blocks, states, taken, g)
    return picks


def _decide_batch(
    states: list["_BlockState"], g: Tensor, taken: Tensor, top: Tensor, j: Tensor, scale: Tensor,
    tied: list[int], eps: float,
) -> None:
    """Decide the near-tie step of each image in ``tied`` on its own (``g`` ``[B, n]``, ``taken``
    bool ``[B, n]``; ``top``, ``j``, ``scale`` ``[B]`` updated in place for those images)."""
    for b in tied:
        parts = [st.image(b) for st in states]
        low = float(top[b]) - eps * (_TOP_UNITS * abs(float(top[b])) + _SCALE_UNITS * float(scale[b]))
        pick, refreshed = _decide(parts, g[b], low, taken[b], [st.image_work(b) for st in states])
        j[b] = pick
        top[b] = g[b, pick]
        if refreshed:
            scale[b] = g[b].max()


def _decide(
    parts: list[tuple[Tensor, float, Tensor]], g: Tensor, low: float, taken: Tensor, work: list[Tensor] | None = None
) -> tuple[int, bool]:
    """The plain greedy's pick at a near-tie step of one image: ``parts`` its blocks
    ``(rows [R_i, n], w_i, best [R_i])``, ``g`` its float64 gains ``[n]`` (updated in place),
    ``low`` the window's lower end (the columns with ``g >= low`` hold the pick), ``taken`` bool
    ``[n]`` its blocked and picked columns, ``work`` optional buffers shaped like each block.

    Where :func:`column_subsets_reproduce`, only the :func:`decision_columns` of the candidates
    are recomputed (their gains become the plain ones); when they are more than half of the
    image's columns, or elsewhere, all its gains are. Returns ``(pick, all gains recomputed)``."""
    n = g.numel()
    rows = parts[0][0]
    if column_subsets_reproduce(rows.device.type, rows.dtype):
        cand = (g >= low).nonzero().squeeze(1)  # ascending
        cols = decision_columns(cand, n)
        if 2 * cols.numel() <= n:
            exact = _image_gains(parts, cols)[torch.searchsorted(cols, cand)]
            g.index_copy_(0, cand, exact.double())
            _COUNTS.column_decisions += 1
            return int(cand[int(exact.argmax())]), False  # first index among equal values
    g.copy_(_image_gains(parts, work=work)).masked_fill_(taken, float("-inf"))
    _COUNTS.full_refreshes += 1
    return int(g.argmax()), True


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
    taken = torch.zeros(n, dtype=torch.bool, device=C.device) if blocked is None else blocked[0].clone()
    g.masked_fill_(taken, float("-inf"))
    picks: list[int] = []
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
                j, refreshed = _decide([(rows, 1.0, best)], g, low, taken, [work])
                if refreshed:
                    scale = float(g.max())
        else:
            j = int(g.argmax())
        picks.append(j)
        g[j] = float("-inf")
        taken[j] = True
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
            g.copy_(_image_gains([(rows, 1.0, best)], work=[work])).masked_fill_(taken, float("-inf"))
            scale = float(g.max())
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
    :mod:`tokensel.solvers.compiled_greedy`); near ties are decided here, image by image, in
    torch, exactly as the eager path decides them."""
    B, R, n = C.shape
    C = C.detach().contiguous()  # selection is not differentiable; numpy views need no grad
    per_image = column_subsets_reproduce("cpu", C.dtype)

    def work() -> Tensor:
        if workspace is None:
            return torch.empty(B, R, n, dtype=C.dtype)
        return workspace.get("greedy0", (B * R, n), C.dtype, C.device).view(B, R, n)

    def decide(b: int, best: Tensor, g: Tensor, picks: Tensor, t: int, low: float) -> int:
        taken = torch.zeros(n, dtype=torch.bool) if blocked is None else blocked[b].clone()
        taken[picks[b, :t]] = True
        if per_image or B == 1:
            return _decide([(C[b], 1.0, best[b])], g[b], low, taken)[0]
        # the batch's plain gains in one pass, as dense_greedy computes them (same shapes: same bits)
        gb = g[b].copy_(plain_gains([(C, 1.0)], [best], [work()])[b]).masked_fill_(taken, float("-inf"))
        _COUNTS.full_refreshes += 1
        return int(gb.argmax())

    indices = compiled_greedy(C, k, blocked, _TOP_UNITS, _SCALE_UNITS, decide)
    if not with_gains:
        return indices, None
    return indices, _pick_gains([(C, 1.0)], indices)


def _refresh(blocks: list[tuple[Tensor, float]], states: list["_BlockState"], taken: Tensor, g: Tensor) -> Tensor:
    """Recompute all gains ``g`` ``[B, n]`` in place with the plain greedy's own computation
    (-inf where ``taken``); return each image's largest gain ``[B]``."""
    B = g.shape[0]
    exact = plain_gains(blocks, [st.best.view(B, -1) for st in states], [st.work.view_as(C) for st, (C, _) in zip(states, blocks)])
    g.copy_(exact.double().masked_fill_(taken, float("-inf")))
    return g.amax(dim=1)


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
    assert total is not None  # there is at least one block
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

    def image(self, b: int) -> tuple[Tensor, float, Tensor]:
        """Image ``b``'s ``(rows [R, n], w, best [R])`` (views)."""
        return self.rows.view(self.B, self.R, self.n)[b], self.w, self.best.view(self.B, self.R)[b]

    def image_work(self, b: int) -> Tensor:
        """Image ``b``'s part ``[R, n]`` of the workspace."""
        return self.work.view(self.B, self.R, self.n)[b]

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
