"""MMTok: multimodal coverage maximisation (ICLR 2026), and its ablations.

MMTok is an :class:`~tokensel.selectors.objective.ObjectiveSelector`: its objective is
:class:`~tokensel.objectives.MultimodalCoverage`, its default solver ``incremental``, which
runs the whole batch's coverage matrix through the batched incremental greedy in one call.
Any registered solver can take its place (``create_selector("mmtok", solver="lazy")``); rows
are then solved one by one on the same coverage matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor

from tokensel.batch import TokenBatch
from tokensel.budget import AdaptiveBudget, Ranking, adaptive_lengths
from tokensel.objectives.base import CoverageObjective
from tokensel.objectives.facility_location import FacilityLocation
from tokensel.objectives.multimodal import VARIANTS, MultimodalCoverage, multimodal_coverage_matrix
from tokensel.selectors.objective import ObjectiveSelector
from tokensel.selectors.registration import register_selector
from tokensel.solvers.incremental import BACKENDS
from tokensel.solvers.incremental_registered import incremental_batched
from tokensel.validation import check_bool, check_choice, check_number

__all__ = ["MMTok", "coverage_curves"]

# picks of the early-exit greedy's first round (then doubled); see MMTok.ranked_prefix
_FIRST_ROUND = 16

#: Solvers whose picks are made one at a time in order (a prefix of k_max picks is the greedy
#: answer for fewer tokens): the ones an adaptive budget can cut.
GREEDY_SOLVERS = ("incremental", "naive", "lazy", "stochastic")

PAPER = "MMTok: Multimodal Coverage Maximization for Efficient Inference of VLMs (ICLR 2026)"


@register_selector("mmtok", paper=PAPER, description="MMTok: greedy coverage of the question's tokens and of all "
                   "vision tokens (multimodal facility location).")
@register_selector("mmtok-text", paper=PAPER, variant="text", description="MMTok's text-vision coverage only; "
                   "once the question is covered, the rest of the budget is zero-gain ties in index order.")
@register_selector("mmtok-vision", paper=PAPER, variant="vision", description="MMTok's vision-vision coverage "
                   "only (facility location of the image's tokens; no question needed).")
class MMTok(ObjectiveSelector):
    """Greedy coverage of the question's tokens and of all vision tokens (facility location).

    Args:
        alpha: weight of the vision-vision coverage term (paper default 0.5).
        tau_tv: text-vision softmax temperature (0.02 for LLaVA, 0.01 for Qwen2.5-VL).
        tau_vv: vision-vision softmax temperature (0.2).
        variant: ``"both"`` (MMTok), ``"text"`` (text-vision only: ``mmtok-text``) or
            ``"vision"`` (vision-vision only, no question needed: ``mmtok-vision``).
        softmax: False for the paper's no-softmax ablation.
        backend: the ``incremental`` solver's backend (see
            :func:`tokensel.solvers.incremental_greedy`): ``"auto"`` (compiled loop on CPU,
            eager torch elsewhere), ``"compiled"`` or ``"torch"``. All give the same picks.
        solver: any registered solver (default ``"incremental"``: the exact incremental greedy,
            first index on ties; ``"lazy"`` and ``"naive"`` make the same picks).
        solver_options: further options of the solver (see :func:`tokensel.maximize`), e.g.
            ``{"time_limit": 10}`` for ``ilp`` (a dict, so that configs can set it).

    Uses ``TokenBatch.text`` (+ ``text_mask``), ``vision``, ``vision_raw`` (falls back to
    ``vision``), ``exclude`` and ``vision_mask``. Large buffers are kept in the selector's
    :class:`~tokensel.workspace.Workspace` between calls (``sel.workspace.clear()`` releases
    them); the workspace keeps one set per thread, so one selector instance may be called from
    several threads at once.

    Adaptive budgets (:class:`tokensel.AdaptiveBudget`): both rules come from this coverage
    objective f (``tol``: its marginal gains; ``coverage``: ``f(S) / f(all pickable tokens)``),
    evaluated in float64 from the float32 coverage matrix along the solver's pick order; the
    solver must be a greedy one (:data:`GREEDY_SOLVERS`), whose picks for k are a prefix of
    its picks for k_max. With the ``incremental`` solver the greedy stops each row once its
    rule is decided (:meth:`ranked_prefix`), with the lengths and picks of the run to k_max.

    Picks do not change when all features are scaled (cosine similarities are computed from
    power-of-two-rescaled vectors where float32 norms would overflow or underflow).
    """

    checks_finite = True

    def __init__(
        self, alpha: float = 0.5, tau_tv: float = 0.02, tau_vv: float = 0.2, variant: str = "both",
        softmax: bool = True, backend: str = "auto", solver: str = "incremental",
        solver_options: dict | None = None,
    ) -> None:
        self.alpha = check_number("alpha", alpha, 0.0)
        self.tau_tv = check_number("tau_tv", tau_tv, 0.0, low_open=True)
        self.tau_vv = check_number("tau_vv", tau_vv, 0.0, low_open=True)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.softmax = check_bool("softmax", softmax)
        self.backend = check_choice("backend", backend, BACKENDS)
        if solver_options is not None and not isinstance(solver_options, Mapping):
            raise TypeError(f"solver_options must be a dict of solver options, got {type(solver_options).__name__}")
        solver_options = dict(solver_options or {})
        if solver == "incremental":
            solver_options = {"backend": backend, **solver_options}
        elif backend != "auto":
            raise ValueError(f"backend={backend!r} applies to solver='incremental' only, got solver={solver!r}")
        super().__init__(solver=solver, **solver_options)
        self.requires = ("text",) if variant != "vision" else ()

    def coverage(self, batch: TokenBatch) -> Tensor:
        """float32 ``[B, R, n]`` coverage matrix ``[P'; alpha Q']`` of a validated batch (a view
        of the selector's workspace: valid until its next call in the same thread)."""
        return multimodal_coverage_matrix(
            batch.text, batch.vision, batch.vision_raw,
            alpha=self.alpha, tau_tv=self.tau_tv, tau_vv=self.tau_vv,
            variant=self.variant, softmax=self.softmax,
            text_mask=batch.text_mask, vision_mask=batch.vision_mask, workspace=self.workspace,
        )

    def objective(self, image: TokenBatch) -> CoverageObjective:
        """MMTok's :class:`~tokensel.objectives.MultimodalCoverage` of one image."""
        return MultimodalCoverage(
            image.text, image.vision, image.vision_raw, alpha=self.alpha, tau_tv=self.tau_tv, tau_vv=self.tau_vv,
            variant=self.variant, softmax=self.softmax, exclude=image.exclude, text_mask=image.text_mask,
        )

    def _checked_coverage(self, batch: TokenBatch) -> Tensor:
        C = self.coverage(batch)
        if not bool(torch.isfinite(C.sum())):
            batch.validate()  # names the input holding NaN or inf
            raise ValueError("the coverage matrix is not finite (features too large for float32?)")
        return C

    def batch_blocks(self, batch: TokenBatch) -> list[tuple[Tensor, float]]:
        return [(self._checked_coverage(batch), 1.0)]

    def row_objectives(self, batch: TokenBatch) -> list[tuple[CoverageObjective, Tensor]]:
        """Each row's facility location over its rows of the batch's coverage matrix (masked
        tokens: zero rows and columns, blocked), so every solver sees the matrix the default
        solver runs on."""
        C = self._checked_coverage(batch)
        index = torch.arange(C.shape[2], device=C.device)
        return [(FacilityLocation(C[b].clone(), exclude=batch.blocked()[b].cpu()), index) for b in range(C.shape[0])]

    adaptive_rules = ("tol", "coverage")

    def check_adaptive(self, budget: AdaptiveBudget) -> None:
        super().check_adaptive(budget)
        if self.solver not in GREEDY_SOLVERS:
            raise ValueError(f"selector {self.name!r}: an AdaptiveBudget cuts the greedy's pick order, but "
                             f"solver={self.solver!r} is not greedy; use one of {GREEDY_SOLVERS}")

    def ranking(self, batch: TokenBatch, k: int) -> Ranking:
        """The solver's first k picks, their gains and the coverage shortfall after each (see
        :func:`coverage_curves`)."""
        indices = self.select(batch, k).indices
        C = self._checked_coverage(batch)
        return coverage_curves(C, _full_coverage(C, batch.blocked()), indices)

    def ranked_prefix(self, batch: TokenBatch, budget: AdaptiveBudget) -> tuple[Tensor, Tensor]:
        """The greedy stopped early: ``ranking(batch, k_max)`` cut by the budget's rule, computed
        in rounds of ``K`` picks (``K = max(k_min, 16)``, then doubled up to ``k_max``): after
        each round the rows whose rule is decided within their first ``K`` picks are done and
        leave the batch; the others run again with twice the picks (the greedy's picks for K
        are the first K of its picks for more). The coverage matrix is built once. The lengths
        and picks are those of the run to ``k_max`` (:func:`coverage_curves` gives every pick
        the same bits whatever the prefix length). Only for the ``incremental`` solver and
        MMTok's own :meth:`ranking`; otherwise the run to ``k_max``."""
        if type(self).ranking is not MMTok.ranking or self.solver != "incremental":
            return super().ranked_prefix(batch, budget)
        C = self._checked_coverage(batch)
        blocked = batch.blocked()
        full = _full_coverage(C, blocked)
        bsz, cap = C.shape[0], budget.k_max
        indices = torch.full((bsz, cap), -1, dtype=torch.long, device=C.device)
        lengths = torch.full((bsz,), cap, dtype=torch.long, device=C.device)
        rows = torch.arange(bsz, device=C.device)
        K = min(cap, max(budget.k_min, _FIRST_ROUND))
        while rows.numel():
            idx, lens = self._round(C, blocked, full, rows, replace(budget, k_max=K))
            done = (lens < K) | (K == cap)  # a length of K may still grow with more picks
            indices[rows[done], :K] = idx[done]
            lengths[rows[done]] = lens[done]
            rows, K = rows[~done], min(cap, 2 * K)
        return indices, lengths

    def _round(self, C: Tensor, blocked: Tensor, full: Tensor, rows: Tensor, budget: AdaptiveBudget) -> tuple[Tensor, Tensor]:
        """``budget.k_max`` greedy picks ``[r, K]`` of the ``rows`` (ascending) and their lengths
        ``[r]`` under ``budget``, solved in runs of consecutive rows (views of C: no copy)."""
        picks, lengths = [], []
        for lo, hi in _runs(rows):
            idx = incremental_batched([(C[lo:hi], 1.0)], budget.k_max, blocked[lo:hi], workspace=self.workspace,
                                      **self.solver_options)
            picks.append(idx)
            lengths.append(adaptive_lengths(coverage_curves(C[lo:hi], full[lo:hi], idx), budget))
        return torch.cat(picks), torch.cat(lengths)

    def extra_repr(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.solver_options.items() if k != "backend")
        return (f"alpha={self.alpha}, tau_tv={self.tau_tv}, tau_vv={self.tau_vv}, variant={self.variant!r}, "
                f"softmax={self.softmax}, backend={self.backend!r}, solver={self.solver!r}{opts}")


def _full_coverage(C: Tensor, blocked: Tensor) -> Tensor:
    """float64 ``[B, R]``: each row's best coverage by all pickable tokens (an image with
    blocked tokens is masked on its own, so that the temporary stays small)."""
    full = C.amax(dim=2)
    for b in blocked.any(dim=1).nonzero().flatten().tolist():
        full[b] = C[b].masked_fill(blocked[b], 0.0).amax(dim=1)
    return full.double()


def _runs(rows: Tensor) -> list[tuple[int, int]]:
    """``[lo, hi)`` runs of consecutive values in the ascending long ``rows``."""
    values = rows.tolist()
    runs: list[tuple[int, int]] = []
    for r in values:
        if runs and runs[-1][1] == r:
            runs[-1] = (runs[-1][0], r + 1)
        else:
            runs.append((r, r + 1))
    return runs


def _row_sums(x: Tensor) -> Tensor:
    """float64 ``[B, R, K]`` -> ``[B, K]``: sums over R as a running sum, r = 0, 1, ..., R - 1
    (torch's CPU cumsum adds in that order, so a column gets the same bits whatever B and K;
    a reduction would group the columns of its vectorised part and of its tail differently,
    and an early exit would then cut where the run to k_max does not)."""
    return x.cumsum(dim=1)[:, -1]


def coverage_curves(C: Tensor, full: Tensor, indices: Tensor) -> Ranking:
    """The coverage objective along each row's pick order.

    Args:
        C: float ``[B, R, n]`` coverage matrix (blocked tokens never picked).
        full: float64 ``[B, R]``: each row's best coverage by all pickable tokens.
        indices: long ``[B, K]`` picks in pick order.

    Returns:
        a :class:`~tokensel.budget.Ranking`: float64 gains ``[B, K]`` (``f(first t+1) - f(first
        t)``), shortfalls ``[B, K]`` (``f(all) - f(first t+1)``) and totals ``[B]`` (``f(all)``),
        from the per-row best coverage of the picked prefixes. Every entry of pick t depends only
        on the first t+1 picks of its row (not on K or the other rows), bit for bit.
    """
    R = C.shape[1]
    best = C.gather(2, indices[:, None, :].expand(-1, R, -1)).cummax(dim=2).values.double()  # [B, R, K]
    gains = _row_sums(torch.diff(best, dim=2, prepend=torch.zeros_like(best[:, :, :1])))
    shortfall = _row_sums(full[:, :, None] - best)
    return Ranking(indices=indices, gains=gains, shortfall=shortfall, total=_row_sums(full[:, :, None])[:, 0])
