"""MMTok's multimodal coverage objective.

For one image: text-vision similarities ``P = z x^T`` ``[m, n]`` and vision-vision similarities
``Q = v v^T`` ``[n, n]`` of L2-normalised float32 features (normalised scale-free, see
:mod:`tokensel.ops`: the picks do not change when the features are scaled), turned into coverage by a row-wise
softmax over the vision axis (``P' = softmax(P / tau_tv) / m``, ``Q' = softmax(Q / tau_vv) / n``),
and covered jointly:

    F(S) = sum_r max_{j in S} P'[r, j] + alpha * sum_l max_{j in S} Q'[l, j],

a facility location over the stacked coverage matrix ``[P'; alpha Q']`` ``[(m + n), n]``.

:func:`multimodal_coverage_matrix` builds that matrix for a whole batch in one buffer, in
place (no concatenated copy, no softmax temporaries): it is what the ``mmtok`` selector runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from tokensel.objectives.facility_location import FacilityLocation
from tokensel.ops import l2_normalize, pow2_rescale, safe_norms
from tokensel.validation import check_choice, check_number
from tokensel.workspace import Workspace

__all__ = ["MultimodalCoverage", "multimodal_coverage_matrix", "l2_normalize", "gram_", "VARIANTS"]

Variant = Literal["both", "text", "vision"]
VARIANTS: tuple[Variant, ...] = ("both", "text", "vision")
# bytes of vision-vision blocks built at a time (a few 576-token images; one large image)
_CHUNK_BYTES = 4 << 20
# rows per block of the symmetric vision-vision product (see gram_)
_GRAM_ROWS = 96


def _bmm(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """``out = a @ b`` for ``[B, ., .]`` operands; one image goes through the 2-D product, which
    skips the batched kernel's overhead (0.3 ms of 1.8 ms for 12 x 4096 x 576 here)."""
    if a.shape[0] == 1:
        torch.mm(a[0], b[0], out=out[0])
        return out
    return torch.matmul(a, b, out=out)


def gram_(v: Tensor, out: Tensor) -> Tensor:
    """``out = v v^T`` for float ``v`` ``[B, n, d]`` into ``out`` ``[B, n, n]`` (a view is fine).

    The product is symmetric, so (like BLAS's syrk) only the blocks on and above the diagonal
    are multiplied, in row blocks of about ``_GRAM_ROWS`` rows, and the rest is mirrored:
    (b + 1) / (2 b) of the multiply-adds of a full product for b blocks (7/12 at n = 576,
    a single product below n = 192). Blocks of about 100 rows were the fastest measured here
    (1 thread: 3.8 ms for 576 x 1024 against 4.1 ms in 3 blocks and 5.9 ms in one product)."""
    n = v.shape[1]
    blocks = max(1, n // _GRAM_ROWS)
    if blocks == 1:
        return _bmm(v, v.transpose(1, 2), out)
    edges = [round(i * n / blocks) for i in range(blocks + 1)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        _bmm(v[:, lo:hi], v[:, lo:].transpose(1, 2), out[:, lo:hi, lo:])
        if lo:
            out[:, lo:hi, :lo].copy_(out[:, :lo, lo:hi].transpose(1, 2))
    return out


def _coverage_rows_(
    S: Tensor,
    tau: float,
    scale: Tensor,
    alpha: float,
    softmax: bool,
    col_valid: Tensor | None,
    row_valid: Tensor | None,
    scratch: Tensor | None = None,
) -> None:
    """Turn similarities ``S`` ``[B, r, n]`` into coverage rows, in place.

    softmax: ``alpha * (softmax(S / tau, dim=-1) / scale)``; otherwise ``alpha * (max(S, 0) / scale)``,
    with ``scale`` ``[B]`` (the number of real rows). The operations and their order are those of
    the plain formula, so the result is bit-identical to computing it out of place. Invalid
    columns get 0 (and no softmax mass); invalid rows become 0. ``scratch``: optional buffer
    shaped like S for the softmax.
    """
    scale = scale.to(S.dtype)[:, None, None]
    if softmax:
        if col_valid is not None:
            S.masked_fill_(~col_valid[:, None, :], float("-inf"))
        S.div_(tau)
        probs = torch.softmax(S, dim=-1) if scratch is None else torch.ops.aten._softmax.out(S, -1, False, out=scratch)
        torch.div(probs, scale, out=S)
    else:
        S.clamp_(min=0).div_(scale)
        if col_valid is not None:
            S.masked_fill_(~col_valid[:, None, :], 0.0)
    if alpha != 1.0:
        S.mul_(alpha)
    if row_valid is not None:
        S.masked_fill_(~row_valid[:, :, None], 0.0)


def _build_(
    text: Tensor | None, vision: Tensor, vision_raw: Tensor | None, C: Tensor, m: int, params: tuple,
    text_mask: Tensor | None, vision_mask: Tensor | None, workspace: Workspace | None,
) -> None:
    """Fill ``C`` ``[B, R, n]`` with the coverage rows of a (sub-)batch; ``params`` is
    ``(alpha, tau_tv, tau_vv, use_text, use_vision, softmax)``."""
    alpha, tau_tv, tau_vv, use_text, use_vision, softmax = params
    B, n, _ = vision.shape
    device = vision.device

    def buffer(name: str, shape: tuple[int, ...]) -> Tensor | None:
        return None if workspace is None else workspace.get(name, shape, torch.float32, device)

    n_valid = (
        vision_mask.sum(dim=1).float() if vision_mask is not None else torch.full((B,), float(n), device=device)
    )
    # x / ||x|| is needed as a matrix only when it also serves as v; for P alone, dividing the
    # columns of z x^T by ||x|| gives the same values (up to rounding) without a pass writing x
    x = l2_normalize(vision, out=buffer("vision", tuple(vision.shape))) if use_vision and vision_raw is None else None
    if use_text and text is not None:  # the caller checked that use_text comes with text
        z = l2_normalize(text)
        P = C[:, :m]
        if x is not None:
            _bmm(z, x.transpose(1, 2), P)
        else:
            vf = vision.float()
            norms, safe = safe_norms(vf)
            if not safe:  # power-of-two rescaling: the bits of the safe case, scale-free
                vf = pow2_rescale(vision)
                norms = torch.linalg.vector_norm(vf, dim=-1)
            _bmm(z, vf.transpose(1, 2), P)
            P.div_(norms.clamp_min_(1e-8)[:, None, :])
        m_valid = text_mask.sum(dim=1).float() if text_mask is not None else torch.full((B,), float(m), device=device)
        _coverage_rows_(P, tau_tv, m_valid, 1.0, softmax, vision_mask, text_mask, buffer("scratch", (B, m, n)))
    if use_vision:
        # a few images at a time, so that each one's [n, n] block is still in cache for its
        # softmax passes (row by row the same operations: the same bits)
        step = max(1, _CHUNK_BYTES // (4 * n * n))
        for lo in range(0, B, step):
            hi = min(B, lo + step)
            vm = None if vision_mask is None else vision_mask[lo:hi]
            if vision_raw is None:
                assert x is not None  # normalized above: use_vision without vision_raw
                v = x[lo:hi]
            else:
                v = l2_normalize(vision_raw[lo:hi], out=buffer("vision_raw", (hi - lo, *vision_raw.shape[1:])))
            Q = gram_(v, C[lo:hi, m:])
            _coverage_rows_(Q, tau_vv, n_valid[lo:hi], float(alpha), softmax, vm, vm, buffer("scratch", (hi - lo, n, n)))


def multimodal_coverage_matrix(
    text: Tensor | None,
    vision: Tensor,
    vision_raw: Tensor | None = None,
    *,
    alpha: float = 0.5,
    tau_tv: float = 0.02,
    tau_vv: float = 0.2,
    variant: Variant = "both",
    softmax: bool = True,
    text_mask: Tensor | None = None,
    vision_mask: Tensor | None = None,
    workspace: Workspace | None = None,
) -> Tensor:
    """MMTok's coverage matrix for a batch.

    Args:
        text: float ``[B, m, D]`` question embeddings (unused, may be None, for ``variant="vision"``).
        vision: float ``[B, n, D]`` projected vision tokens.
        vision_raw: float ``[B, n, d]`` encoder features for the vision-vision term (default ``vision``).
        alpha: weight of the vision-vision term.
        tau_tv: softmax temperature of the text-vision term.
        tau_vv: softmax temperature of the vision-vision term.
        variant: ``"both"`` (MMTok), ``"text"`` (text-vision only) or ``"vision"`` (vision-vision only).
        softmax: False gives the paper's no-softmax ablation: similarities clipped at 0, same scaling.
        text_mask: bool ``[B, m]``, True for real question tokens (ragged questions).
        vision_mask: bool ``[B, n]``, True for real vision tokens (ragged images).
        workspace: a :class:`tokensel.workspace.Workspace` to take every large buffer from (the
            result then lives in it, valid until the workspace's next use).

    Returns:
        float32 ``[B, R, n]`` with ``R = m + n`` (``m`` for "text", ``n`` for "vision"): the rows
        ``P'`` first, then ``alpha * Q'``. Every entry is >= 0.
    """
    check_choice("variant", variant, VARIANTS)
    alpha = check_number("alpha", alpha, 0.0)
    tau_tv = check_number("tau_tv", tau_tv, 0.0, low_open=True)
    tau_vv = check_number("tau_vv", tau_vv, 0.0, low_open=True)
    use_text = variant in ("both", "text")
    use_vision = variant in ("both", "vision")
    if use_text and text is None:
        raise ValueError(f"variant {variant!r} needs text (the question embeddings); got text=None")
    B, n, _ = vision.shape
    m = text.shape[1] if use_text and text is not None else 0
    device = vision.device
    R = m + (n if use_vision else 0)
    C = None if workspace is None else workspace.get("coverage", (B, R, n), torch.float32, device)
    if C is None:
        C = torch.empty(B, R, n, dtype=torch.float32, device=device)
    # on CPU one image at a time: its features stay in cache through all their passes, and every
    # image of a batch goes through the single-image computation (its own bits, the 2-D products)
    step = 1 if device.type == "cpu" else B
    for lo in range(0, B, step):
        hi = min(B, lo + step)
        part = slice(lo, hi)
        _build_(
            None if text is None else text[part], vision[part], None if vision_raw is None else vision_raw[part],
            C[part], m, (alpha, tau_tv, tau_vv, use_text, use_vision, softmax),
            None if text_mask is None else text_mask[part], None if vision_mask is None else vision_mask[part],
            workspace,
        )
    return C


class MultimodalCoverage(FacilityLocation):
    """MMTok's objective for one image, as a :class:`FacilityLocation` over ``[P'; alpha Q']``.

    Args:
        text: float ``[m, D]`` question token embeddings ``z`` (may be None for ``variant="vision"``).
        vision: float ``[n, D]`` projected vision tokens ``x``.
        vision_raw: float ``[n, d]`` pre-projector encoder features ``v`` (default: ``vision``).
        alpha: weight of the vision-vision term (paper default 0.5).
        tau_tv: text-vision temperature (0.02 for LLaVA, 0.01 for Qwen2.5-VL).
        tau_vv: vision-vision temperature (0.2).
        variant: ``"both"``, ``"text"`` (P only) or ``"vision"`` (Q only): the paper's ablations.
        softmax: False for the no-softmax ablation.
        exclude: bool mask ``[n]`` or indices of tokens that may not be picked.
        text_mask: bool ``[m]``, True for real question tokens.

    Attributes:
        C: float32 ``[R, n]`` coverage matrix; ``P`` and ``Q`` are views of its two row blocks
            (``Q`` already multiplied by alpha).
    """

    def __init__(
        self,
        text: Tensor | None,
        vision: Tensor,
        vision_raw: Tensor | None = None,
        alpha: float = 0.5,
        tau_tv: float = 0.02,
        tau_vv: float = 0.2,
        variant: Variant = "both",
        softmax: bool = True,
        exclude: Tensor | Sequence[int] | None = None,
        text_mask: Tensor | None = None,
    ) -> None:
        from tokensel.batch import TokenBatch

        batch = TokenBatch(vision=vision, vision_raw=vision_raw, text=text, text_mask=text_mask)
        if batch.batched:
            raise ValueError(
                f"MultimodalCoverage covers one image: vision must be [n, D], got {tuple(vision.shape)}; "
                "use the 'mmtok' selector for batches"
            )
        b = batch.validate()
        C = multimodal_coverage_matrix(
            b.text, b.vision, b.vision_raw, alpha=alpha, tau_tv=tau_tv, tau_vv=tau_vv,
            variant=variant, softmax=softmax, text_mask=b.text_mask,
        )[0]
        super().__init__(C, exclude=exclude)
        m = text.shape[0] if text is not None and variant in ("both", "text") else 0
        self.P = C[:m]
        self.Q = C[m:]
        self.alpha, self.tau_tv, self.tau_vv = alpha, tau_tv, tau_vv
        self.variant, self.softmax = variant, softmax
