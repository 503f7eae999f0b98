"""The input and output of every selector: :class:`TokenBatch` and :class:`Selection`.

A ``TokenBatch`` holds what a model adapter gathered for B images (or crops), each with n
candidate vision tokens. Unbatched inputs (``vision`` of shape ``[n, D]``) are accepted and
answered unbatched. ``TokenBatch.validate`` turns every shape, dtype, device and finiteness
mistake into a ``ValueError`` / ``TypeError`` that names the argument.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from tokensel.ops import all_finite
from tokensel.validation import check_int

__all__ = ["TokenBatch", "Selection"]


def _check_float(name: str, t: Tensor, rank: int, device: torch.device, finite: bool = True) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != rank:
        raise ValueError(f"{name} must have {rank} dimensions (batched), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name} is on device {t.device} but vision is on {device}: put all inputs on one device")
    if t.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (shapes only, no values): selection needs real values")
    if rank == 3 and t.shape[2] < 1:
        raise ValueError(f"{name} must have at least one feature per token, got shape {tuple(t.shape)}")
    if finite and not all_finite(t):
        raise ValueError(f"{name} contains NaN or inf values")


def _check_bool(name: str, t: Tensor, shape: tuple[int, ...], device: torch.device) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on device {t.device} but vision is on {device}: put all inputs on one device")


def _check_grid(grid: object, n: int) -> tuple[int, int]:
    if isinstance(grid, (str, bytes)) or not isinstance(grid, (tuple, list, torch.Size)) or len(grid) != 2:
        raise TypeError(f"grid must be a pair (h, w) of positive integers with h * w == n = {n}, got {grid!r}")
    h, w = check_int("grid[0]", grid[0], 1), check_int("grid[1]", grid[1], 1)
    if h * w != n:
        raise ValueError(f"grid must be (h, w) with h * w == n = {n}, got {tuple(grid)}")
    return h, w


@dataclass
class TokenBatch:
    """Candidate vision tokens of B images (or crops) plus whatever context selectors use.

    Shapes are given batched; every tensor may also drop its leading B axis when ``vision`` does.

    Attributes:
        vision: float ``[B, n, D]``: projected vision tokens, in the language model's input space.
            These are the tokens that are kept.
        vision_raw: float ``[B, n, d]``: vision-encoder features before the projector
            (LLaVA: CLIP ``hidden_states[-2]`` without CLS). ``None`` falls back to ``vision``.
        cls: float ``[B, d]``: the encoder's CLS token, in the feature space of ``vision_raw``
            (of ``vision`` when ``vision_raw`` is None); LLaVA: row 0 of CLIP
            ``hidden_states[-2]``. It is not a candidate: selectors whose output begins with it
            (VisionZip) say so with ``Selection.leading_cls``.
        text: float ``[B, m, D]``: the question's token embeddings (``embed_tokens`` output).
        text_mask: bool ``[B, m]``: True where ``text`` holds a real token (ragged questions).
        exclude: bool ``[B, n]``: True = this token may not be picked (padding patches).
        vision_mask: bool ``[B, n]``: True where ``vision`` holds a real token (ragged n across
            the batch). Masked-out tokens are neither picked nor counted as something to cover.
        cls_attention: float ``[B, n]``: attention from CLS to each patch (summed over heads),
            used by VisionZip.
        keys: float ``[B, n, dk]``: head-averaged attention keys of the encoder layer, used by
            VisionZip's contextual merging.
        llm_attention: float ``[B, n]``: attention the language model pays to each vision token
            (FastV-style in-LLM selectors).
        grid: ``(h, w)`` with ``h * w == n``: the patch grid, for spatial selectors.
    """

    vision: Tensor
    vision_raw: Tensor | None = None
    cls: Tensor | None = None
    text: Tensor | None = None
    text_mask: Tensor | None = None
    exclude: Tensor | None = None
    vision_mask: Tensor | None = None
    cls_attention: Tensor | None = None
    keys: Tensor | None = None
    llm_attention: Tensor | None = None
    grid: tuple[int, int] | None = None

    @property
    def batched(self) -> bool:
        return isinstance(self.vision, Tensor) and self.vision.dim() == 3

    @property
    def batch_size(self) -> int:
        return self.vision.shape[0] if self.batched else 1

    @property
    def num_tokens(self) -> int:
        return self.vision.shape[-2]

    def as_batched(self) -> "TokenBatch":
        """Return a copy in which every tensor has its leading batch axis (B = 1 if unbatched)."""
        if not isinstance(self.vision, Tensor):
            raise TypeError(f"vision must be a torch.Tensor, got {type(self.vision).__name__}")
        if self.vision.dim() == 3:
            return self
        if self.vision.dim() != 2:
            raise ValueError(f"vision must have shape [B, n, D] or [n, D], got {tuple(self.vision.shape)}")
        updates: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                updates[f.name] = value.unsqueeze(0)
        return replace(self, **updates)

    def validate(self, finite: bool = True) -> "TokenBatch":
        """Check shapes, dtypes, devices and values; return the batched form.

        ``finite=False`` skips the NaN/inf scan of the features (one pass over each, reduced
        in float64 so that ordinary 16-bit values do not overflow it), for callers that check
        what they compute from them instead and then call :meth:`validate` again to name the
        culprit. Tensors that require grad are detached in the result (selection is not
        differentiable); meta tensors are refused (they hold no values); ``grid`` comes back as
        a tuple of two ints.

        Raises:
            ValueError: a bad shape or value (the message names the argument).
            TypeError: a bad type or dtype (the message names the argument).
        """
        b = self.as_batched()
        v = b.vision
        device = v.device
        _check_float("vision", v, 3, device, finite)
        bs, n, _ = v.shape
        if bs < 1:
            raise ValueError(f"vision must hold at least one image (B >= 1), got shape {tuple(v.shape)}")
        if n < 1:
            raise ValueError("vision must hold at least one token (n >= 1)")
        _check_vision_extras(b, finite)
        _check_text(b, finite)
        _check_token_fields(b, finite)
        updates: dict[str, Any] = {f.name: getattr(b, f.name).detach() for f in fields(b)
                   if isinstance(getattr(b, f.name), Tensor) and getattr(b, f.name).requires_grad}
        if b.grid is not None:
            updates["grid"] = _check_grid(b.grid, n)
        return replace(b, **updates) if updates else b

    def take_rows(self, rows: Tensor) -> "TokenBatch":
        """The batched sub-batch of the rows ``rows`` (long ``[b]``) of a batched TokenBatch."""
        updates: dict[str, Any] = {}  # field name -> new value, for replace()
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                updates[f.name] = value.index_select(0, rows.to(value.device))
        return replace(self, **updates)

    def required(self, name: str) -> Tensor:
        """The tensor field ``name``, which the caller needs (a selector's ``requires``);
        ``ValueError`` naming it when it is None."""
        value = getattr(self, name)
        if not isinstance(value, Tensor):
            raise ValueError(f"TokenBatch.{name} is needed here but is {value!r}")
        return value

    def blocked(self) -> Tensor:
        """bool ``[B, n]``: tokens that may not be picked (excluded or masked out). Batched form."""
        b = self.as_batched()
        blocked = torch.zeros(b.vision.shape[:2], dtype=torch.bool, device=b.vision.device)
        if b.exclude is not None:
            blocked |= b.exclude
        if b.vision_mask is not None:
            blocked |= ~b.vision_mask
        return blocked


def _check_vision_extras(b: TokenBatch, finite: bool) -> None:
    """``vision_raw`` and ``cls`` of a batched TokenBatch whose ``vision`` is checked."""
    v = b.vision
    bs, n, _ = v.shape
    if b.vision_raw is not None:
        _check_float("vision_raw", b.vision_raw, 3, v.device, finite)
        if b.vision_raw.shape[:2] != (bs, n):
            raise ValueError(f"vision_raw must have shape [B={bs}, n={n}, d], got {tuple(b.vision_raw.shape)}")
    if b.cls is not None:
        _check_float("cls", b.cls, 2, v.device, finite)
        space = b.vision_raw if b.vision_raw is not None else v
        if tuple(b.cls.shape) != (bs, space.shape[2]):
            which = "vision_raw" if b.vision_raw is not None else "vision"
            raise ValueError(
                f"cls must have shape [B={bs}, {space.shape[2]}] (the feature size of {which}), "
                f"got {tuple(b.cls.shape)}"
            )


def _check_text(b: TokenBatch, finite: bool) -> None:
    """``text`` and ``text_mask`` of a batched TokenBatch whose ``vision`` is checked."""
    v = b.vision
    if b.text is None:
        if b.text_mask is not None:
            raise ValueError("text_mask was given without text")
        return
    _check_float("text", b.text, 3, v.device, finite)
    if b.text.shape[0] != v.shape[0]:
        raise ValueError(f"text must have batch size {v.shape[0]} like vision, got shape {tuple(b.text.shape)}")
    if b.text.shape[2] != v.shape[2]:
        raise ValueError(
            f"text must have the feature size of vision (D={v.shape[2]}), got shape {tuple(b.text.shape)}"
        )
    if b.text.shape[1] < 1:
        raise ValueError("text must hold at least one token (m >= 1)")
    if b.text_mask is not None:
        _check_bool("text_mask", b.text_mask, tuple(b.text.shape[:2]), v.device)
        if not bool(b.text_mask.any(dim=1).all()):
            raise ValueError("text_mask leaves some sample with no text token")


def _check_token_fields(b: TokenBatch, finite: bool) -> None:
    """The per-token fields (masks, attention scores, keys) of a batched TokenBatch."""
    v = b.vision
    bs, n, _ = v.shape
    device = v.device
    if b.exclude is not None:
        _check_bool("exclude", b.exclude, (bs, n), device)
    if b.vision_mask is not None:
        _check_bool("vision_mask", b.vision_mask, (bs, n), device)
        if not bool(b.vision_mask.any(dim=1).all()):
            raise ValueError("vision_mask leaves some sample with no vision token")
    for name in ("cls_attention", "llm_attention"):
        scores = getattr(b, name)
        if scores is not None:
            _check_float(name, scores, 2, device, finite)
            if tuple(scores.shape) != (bs, n):
                raise ValueError(f"{name} must have shape {(bs, n)}, got {tuple(scores.shape)}")
    if b.keys is not None:
        _check_float("keys", b.keys, 3, device, finite)
        if b.keys.shape[:2] != (bs, n):
            raise ValueError(f"keys must have shape [B={bs}, n={n}, dk], got {tuple(b.keys.shape)}")


@dataclass(init=False)  # __init__ below: ``lengths`` is optional there but never None after it
class Selection:
    """What a selector returns for a :class:`TokenBatch`: the output tokens of each row, in the
    order in which they enter the language model.

    Row order: plain selections (``weights is None``) list their indices sorted ascending.
    Merging selections (``weights`` given) keep the order the selector produced, which is part
    of the method (VisionZip: dominant tokens in index order, then contextual tokens in target
    order). When ``leading_cls`` is True the output begins with the encoder's CLS token, which is
    not one of the n candidates and so has no index: the output is
    ``[CLS, row 0 of indices, row 1, ...]`` and holds ``indices.shape[-1] + 1`` tokens.

    Rows may keep different numbers of tokens (a row with fewer pickable tokens than the budget
    keeps all of them; an adaptive budget stops early): ``lengths[b]`` says how many of row b's
    slots are real. **Padding convention**: slots ``lengths[b] ..`` of row b are padding; their
    ``indices`` are ``-1`` and their ``weights`` rows are zero. :meth:`gather` returns zero
    vectors there, :meth:`mask` ignores them, :meth:`row` and :meth:`unbatched` drop them.
    Padding never occurs in a row whose length is the full width.

    Attributes:
        indices: long ``[B, j]`` (``[j]`` for unbatched input): for each output token after the
            CLS token (if any), the index of the candidate token it is, or (merged tokens) the
            index it stands at in the image. Plain selections: in each row the real slots are
            distinct and sorted ascending, then come the ``-1`` pads.
        weights: float ``[B, j, n]`` or ``None``. ``None`` means the output tokens are the input
            tokens at ``indices``. Otherwise output token i is ``sum_j weights[b, i, j] * token_j``
            (token merging, e.g. pooling or VisionZip's contextual tokens); apply it to projected
            tokens or to encoder features alike with :meth:`gather`.
        scores: optional float ``[B, n]``: per-token scores the selector ranked by, for plots
            (NaN in rows that kept every pickable token: nothing was ranked there).
        leading_cls: True if the output begins with the encoder's CLS token (``TokenBatch.cls``).
        contextual: optional bool ``[B, j]``: True where the output token is a contextual token
            (VisionZip): a merge that stands for no single place of the image, which any-res
            layouts put after the tokens that have one. ``None`` = no such token.
        lengths: long ``[B]`` (0-d for unbatched): real slots of ``indices`` per row (the CLS
            token not counted). Not given (``None``): every slot is real; it is filled in on
            construction, so it is never None on a constructed Selection.
    """

    # the defaults are __init__'s
    indices: Tensor
    weights: Tensor | None
    scores: Tensor | None
    leading_cls: bool
    contextual: Tensor | None
    lengths: Tensor

    def __init__(
        self,
        indices: Tensor,
        weights: Tensor | None = None,
        scores: Tensor | None = None,
        leading_cls: bool = False,
        contextual: Tensor | None = None,
        lengths: Tensor | None = None,
    ) -> None:
        if not isinstance(indices, Tensor) or indices.dim() < 1:
            raise TypeError(f"indices must be a tensor of shape [B, k] or [k], got {indices!r}")
        self.indices, self.weights, self.scores = indices, weights, scores
        self.leading_cls, self.contextual = leading_cls, contextual
        if lengths is None:
            lengths = torch.full(indices.shape[:-1], indices.shape[-1], dtype=torch.long, device=indices.device)
        elif tuple(lengths.shape) != tuple(indices.shape[:-1]):
            raise ValueError(
                f"lengths must have shape {tuple(indices.shape[:-1])} (one per row of indices), "
                f"got {tuple(lengths.shape)}"
            )
        self.lengths = lengths

    @property
    def k(self) -> int:
        """Output tokens per row (the largest number a row keeps), the CLS token included."""
        return self.indices.shape[-1] + int(self.leading_cls)

    @property
    def valid(self) -> Tensor:
        """bool, shaped like ``indices``: True at real (non-padding) slots."""
        slots = torch.arange(self.indices.shape[-1], device=self.indices.device)
        return slots < self.lengths.to(self.indices.device)[..., None]

    @property
    def ragged(self) -> bool:
        """True if some row keeps fewer tokens than the widest (so some slots are padding)."""
        return bool((self.lengths < self.indices.shape[-1]).any())

    def gather(self, tokens: Tensor, cls: Tensor | None = None) -> Tensor:
        """The output tokens ``[B, k, D]`` (``[k, D]``) of tokens ``[B, n, D]`` (``[n, D]``);
        zero vectors at padding slots.

        ``cls`` (float ``[B, D]`` or ``[D]``, in the space of ``tokens``) is the CLS token; it is
        required when ``leading_cls`` is True and ignored otherwise.
        """
        if tokens.dim() != self.indices.dim() + 1 or tokens.shape[:-2] != self.indices.shape[:-1]:
            raise ValueError(
                f"tokens must have shape [..., n, D] matching indices {tuple(self.indices.shape)}, "
                f"got {tuple(tokens.shape)}"
            )
        self._check_n(tokens.shape[-2], "tokens")
        if self.weights is not None:
            body = self.weights.to(tokens.dtype) @ tokens
        else:
            idx = self.indices.clamp_min(0).unsqueeze(-1).expand(*self.indices.shape, tokens.shape[-1])
            body = torch.gather(tokens, -2, idx)
            if self.ragged:
                body = body * self.valid.unsqueeze(-1).to(body.dtype)
        if not self.leading_cls:
            return body
        if cls is None:
            raise ValueError(
                "this selection begins with the encoder's CLS token (leading_cls=True): pass its "
                "feature as cls= (TokenBatch.cls), or call without_cls() first"
            )
        want = (*tokens.shape[:-2], tokens.shape[-1])
        if tuple(cls.shape) != want:
            raise ValueError(f"cls must have shape {want} (tokens without their n axis), got {tuple(cls.shape)}")
        return torch.cat([cls.to(body.dtype).unsqueeze(-2), body], dim=-2)

    def without_cls(self) -> "Selection":
        """The same selection with the leading CLS token dropped (``k`` one less)."""
        return replace(self, leading_cls=False)

    def mask(self, n: int) -> Tensor:
        """bool ``[B, n]`` (or ``[n]``): True at kept indices (padding slots are ignored; the CLS
        token is not a candidate)."""
        self._check_n(n, "n")
        out = torch.zeros(*self.indices.shape[:-1], n + 1, dtype=torch.bool, device=self.indices.device)
        # padding (-1) goes to the extra last column, which is dropped
        return out.scatter(-1, self.indices.masked_fill(~self.valid, n), True)[..., :n]

    def _check_n(self, n: int, what: str) -> None:
        """Raise unless a token axis of length ``n`` holds every kept index (and fits weights)."""
        need = int(self.indices.max()) + 1 if self.indices.numel() else 0
        if self.weights is not None and self.weights.shape[-1] != n:
            raise ValueError(f"{what} has {n} tokens but the selection's weights expect {self.weights.shape[-1]}")
        if n < need:
            raise ValueError(f"{what} has {n} tokens but the selection keeps index {need - 1}")

    def row(self, b: int) -> "Selection":
        """Row ``b`` of a batched selection, unbatched, without its padding slots."""
        if self.indices.dim() != 2:
            raise ValueError(f"row() needs a batched selection (indices [B, j]), got {tuple(self.indices.shape)}")
        length = int(self.lengths[b])
        return Selection(
            indices=self.indices[b, :length],
            weights=None if self.weights is None else self.weights[b, :length],
            scores=None if self.scores is None else self.scores[b],
            leading_cls=self.leading_cls,
            contextual=None if self.contextual is None else self.contextual[b, :length],
        )

    def unbatched(self) -> "Selection":
        """Drop a leading batch axis of size 1 (and the row's padding slots)."""
        if self.indices.dim() != 2 or self.indices.shape[0] != 1:
            raise ValueError(f"unbatched() needs indices of shape [1, k], got {tuple(self.indices.shape)}")
        return self.row(0)
