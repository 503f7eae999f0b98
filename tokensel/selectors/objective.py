""":class:`ObjectiveSelector`: a batched selector from a coverage objective and a solver.

Write the objective of one image, pick a solver; the selector does the rest (validation, the
rows with at most k pickable tokens (kept whole), one objective per row of the batch, exclusions and masks, indices mapped
back into the row)::

    def cosine_fl(image):                 # image: unbatched TokenBatch of one image
        x = torch.nn.functional.normalize(image.vision.double(), dim=-1)
        return FacilityLocation((x @ x.T).clamp_min(0))

    sel = ObjectiveSelector(cosine_fl, solver="lazy")

    @register_selector("cosine-fl")          # by name: in configs, sweeps, tokensel eval
    class CosineFL(ObjectiveSelector):
        def objective(self, image):
            return cosine_fl(image)

Subclasses may override :meth:`ObjectiveSelector.objective` instead of passing
``objective_fn``, :meth:`~ObjectiveSelector.row_objectives` to build every row's objective at
once, and :meth:`~ObjectiveSelector.batch_blocks` to hand a solver with a batched form the
whole batch's coverage in one call (``mmtok`` does both).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from tokensel.batch import Selection, TokenBatch
from tokensel.objectives.base import CoverageObjective
from tokensel.objectives.restricted import Restricted
from tokensel.selectors.base import Selector
from tokensel.selectors.rows import image_alone
from tokensel.solvers import maximize
from tokensel.solvers.registry import solver_info
from tokensel.workspace import Workspace

__all__ = ["ObjectiveSelector"]

ObjectiveFn = Callable[[TokenBatch], CoverageObjective]


class ObjectiveSelector(Selector):
    """Selects, for each image, the k tokens a solver picks for the image's objective.

    Args:
        objective_fn: maps one image (an unbatched :class:`TokenBatch`: ``vision`` ``[n, D]``,
            masked-out tokens and question tokens already dropped, ``exclude`` ``[n]`` or None)
            to a :class:`~tokensel.objectives.CoverageObjective` over its ``n`` tokens. Optional
            in subclasses that override :meth:`objective`.
        solver: a name from :func:`tokensel.list_solvers` (default ``"lazy"``).
        requires: TokenBatch fields the objective cannot work without (e.g. ``("text",)``).
        **solver_options: passed to the solver (see :func:`tokensel.maximize`); ``tol`` is
            refused (a selector returns exactly k tokens).

    Excluded tokens are never picked, whether or not the objective excludes them itself.
    Its :class:`~tokensel.workspace.Workspace` (for solvers with a batched form) keeps one set
    of buffers per thread, so one instance may be called from several threads at once.
    """

    def __init__(
        self, objective_fn: ObjectiveFn | None = None, solver: str = "lazy", *,
        requires: tuple[str, ...] | None = None, **solver_options: object,
    ) -> None:
        if objective_fn is not None and not callable(objective_fn):
            raise TypeError(f"objective_fn must be a callable (image -> CoverageObjective), got {objective_fn!r}")
        if objective_fn is None and type(self).objective is ObjectiveSelector.objective:
            raise TypeError("ObjectiveSelector needs objective_fn (image -> CoverageObjective), or a subclass "
                            "that overrides objective()")
        if "tol" in solver_options:
            raise ValueError("tol is not a selector option: pass k=tokensel.AdaptiveBudget(k_max, tol=...) "
                             "to the call instead (selectors with a stopping rule, e.g. mmtok)")
        solver_info(solver).check_options(solver_options)  # unknown names and options fail here
        self.objective_fn = objective_fn
        self.solver = solver
        self.solver_options: dict[str, Any] = dict(solver_options)  # checked by the solver above
        if requires is not None:
            self.requires = tuple(requires)
        self.workspace = Workspace()

    def objective(self, image: TokenBatch) -> CoverageObjective:
        """The objective of one image (an unbatched TokenBatch without masks)."""
        if self.objective_fn is None:  # __init__ refuses this unless a subclass overrides objective()
            raise TypeError(f"{type(self).__name__} has no objective_fn and does not override objective()")
        return self.objective_fn(image)

    def row_objectives(self, batch: TokenBatch) -> list[tuple[CoverageObjective, Tensor]]:
        """For each row of a validated batch: its objective and the row index of each of its
        candidates (long ``[n_b]``). Default: :meth:`objective` on :func:`image_alone` of each row."""
        out = []
        for b in range(batch.vision.shape[0]):
            image, index = image_alone(batch, b)
            obj = self.objective(image)
            if not isinstance(obj, CoverageObjective):
                raise TypeError(f"{self.name or type(self).__name__}: the objective of an image must be a "
                                f"CoverageObjective, got {type(obj).__name__}")
            if obj.n != index.numel():
                raise ValueError(f"{self.name or type(self).__name__}: the objective of row {b} has n={obj.n} "
                                 f"candidates, but the image has {index.numel()} tokens")
            out.append((obj, index))
        return out

    def batch_blocks(self, batch: TokenBatch) -> list[tuple[Tensor, float]] | None:
        """Facility-location coverage of the whole batch, blocks ``(C [B, R, n] >= 0, weight)``
        with blocked tokens' rows and columns already harmless, for solvers with a batched form;
        None (the default) sends every row through :meth:`row_objectives`."""
        return None

    def select(self, batch: TokenBatch, k: int) -> Selection:
        info = solver_info(self.solver)
        if info.batched is not None:
            blocks = self.batch_blocks(batch)
            if blocks is not None:
                idx = info.batched(blocks, k, batch.blocked(), workspace=self.workspace, **self.solver_options)
                return Selection(indices=idx)
        blocked = batch.blocked()
        rows = []
        for b, (obj, index) in enumerate(self.row_objectives(batch)):
            restricted = Restricted(obj, blocked[b, index].cpu())
            sol = maximize(restricted, k, solver=self.solver, **self.solver_options)
            rows.append(index[sol.indices.to(index.device)])
        return Selection(indices=torch.stack(rows).to(batch.vision.device))

    def extra_repr(self) -> str:
        fn = getattr(self.objective_fn, "__name__", repr(self.objective_fn)) if self.objective_fn else None
        opts = "".join(f", {k}={v!r}" for k, v in self.solver_options.items())
        return (f"objective_fn={fn}, " if fn else "") + f"solver={self.solver!r}{opts}"
