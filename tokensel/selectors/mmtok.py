"""MMTok: multimodal coverage maximisation (ICLR 2026), and its ablations."""

from __future__ import annotations

import torch

from tokensel.batch import Selection, TokenBatch
from tokensel.budget import Ranking
from tokensel.objectives.multimodal import VARIANTS, multimodal_coverage_matrix
from tokensel.selectors.base import Selector
from tokensel.selectors.registry import register_selector
from tokensel.solvers.incremental import BACKENDS, incremental_greedy
from tokensel.validation import check_bool, check_choice, check_number
from tokensel.workspace import Workspace

__all__ = ["MMTok"]

PAPER = "MMTok: Multimodal Coverage Maximization for Efficient Inference of VLMs (ICLR 2026)"


@register_selector("mmtok", paper=PAPER)
@register_selector("mmtok-text", paper=PAPER, variant="text")
@register_selector("mmtok-vision", paper=PAPER, variant="vision")
class MMTok(Selector):
    """Greedy coverage of the question's tokens and of all vision tokens (facility location).

    Args:
        alpha: weight of the vision-vision coverage term (paper default 0.5).
        tau_tv: text-vision softmax temperature (0.02 for LLaVA, 0.01 for Qwen2.5-VL).
        tau_vv: vision-vision softmax temperature (0.2).
        variant: ``"both"`` (MMTok), ``"text"`` (text-vision only: ``mmtok-text``) or
            ``"vision"`` (vision-vision only, no question needed: ``mmtok-vision``).
        softmax: False for the paper's no-softmax ablation.
        backend: the greedy's backend (see :func:`tokensel.solvers.incremental_greedy`):
            ``"auto"`` (compiled loop on CPU, eager torch elsewhere), ``"compiled"`` or
            ``"torch"``. All give the same picks.

    Uses ``TokenBatch.text`` (+ ``text_mask``), ``vision``, ``vision_raw`` (falls back to
    ``vision``), ``exclude`` and ``vision_mask``. The greedy is exact (first index on ties) and
    incremental: see :func:`tokensel.solvers.incremental_greedy`. Large buffers are kept in
    the selector's :class:`~tokensel.workspace.Workspace` between calls (``sel.workspace.clear()``
    releases them); the workspace keeps one set per thread, so one selector instance may be
    called from several threads at once.

    Adaptive budgets (:class:`tokensel.AdaptiveBudget`): both rules come from this coverage
    objective f (``tol``: its marginal gains; ``coverage``: ``f(S) / f(all pickable tokens)``),
    evaluated in float64 from the float32 coverage matrix.

    Picks do not change when all features are scaled (cosine similarities are computed from
    power-of-two-rescaled vectors where float32 norms would overflow or underflow).
    """

    def __init__(
        self, alpha: float = 0.5, tau_tv: float = 0.02, tau_vv: float = 0.2, variant: str = "both",
        softmax: bool = True, backend: str = "auto",
    ) -> None:
        self.alpha = check_number("alpha", alpha, 0.0)
        self.tau_tv = check_number("tau_tv", tau_tv, 0.0, low_open=True)
        self.tau_vv = check_number("tau_vv", tau_vv, 0.0, low_open=True)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.softmax = check_bool("softmax", softmax)
        self.backend = check_choice("backend", backend, BACKENDS)
        self.requires = ("text",) if variant != "vision" else ()
        self.workspace = Workspace()

    def coverage(self, batch: TokenBatch):
        """float32 ``[B, R, n]`` coverage matrix ``[P'; alpha Q']`` of a validated batch (a view
        of the selector's workspace: valid until its next call in the same thread)."""
        return multimodal_coverage_matrix(
            batch.text, batch.vision, batch.vision_raw,
            alpha=self.alpha, tau_tv=self.tau_tv, tau_vv=self.tau_vv,
            variant=self.variant, softmax=self.softmax,
            text_mask=batch.text_mask, vision_mask=batch.vision_mask, workspace=self.workspace,
        )

    checks_finite = True

    adaptive_rules = ("tol", "coverage")

    def _greedy(self, batch: TokenBatch, k: int):
        C = self.coverage(batch)
        if not bool(torch.isfinite(C.sum())):
            batch.validate()  # names the input holding NaN or inf
            raise ValueError("the coverage matrix is not finite (features too large for float32?)")
        indices, _ = incremental_greedy(
            [(C, 1.0)], k, batch.blocked(), workspace=self.workspace, with_gains=False, backend=self.backend
        )
        return C, indices

    def select(self, batch: TokenBatch, k: int) -> Selection:
        return Selection(indices=self._greedy(batch, k)[1])

    def ranking(self, batch: TokenBatch, k: int) -> Ranking:
        """The greedy's first k picks, their gains and the coverage shortfall after each, from the
        per-row best coverage ``[B, R, k]`` of the picked prefixes (float64 sums)."""
        C, indices = self._greedy(batch, k)
        R = C.shape[1]
        best = C.gather(2, indices[:, None, :].expand(-1, R, -1)).cummax(dim=2).values.double()
        full = C.masked_fill(batch.blocked()[:, None, :], 0.0).amax(dim=2).double()
        gains = torch.diff(best, dim=2, prepend=torch.zeros_like(best[:, :, :1])).sum(dim=1)
        shortfall = (full[:, :, None] - best).sum(dim=1)
        return Ranking(indices=indices, gains=gains, shortfall=shortfall, total=full.sum(dim=1))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, tau_tv={self.tau_tv}, tau_vv={self.tau_vv}, variant={self.variant!r}, softmax={self.softmax}, backend={self.backend!r}"
