"""Numerically safe tensor operations shared by every layer (finiteness, scale-free norms).

Two facts drive these helpers:

* a reduction in a 16-bit dtype overflows on ordinary values (float16 sums reach 65504 after a
  few hundred tokens), so every check reduces in a wide dtype;
* multiplying a vector by a power of two is exact in floating point, and so are the sums,
  square roots and quotients computed from it (short of overflow and underflow). Rescaling each
  vector by a power of two before taking its norm therefore gives the bits of the unscaled
  computation whenever that one was safe, and sane values when it was not (features of size
  1e18 or 1e-20 overflow or underflow ``||x||^2`` in float32). Cosine similarities computed
  this way are invariant, bit for bit, under power-of-two scalings of the features, and up to
  the input's own rounding under any other scaling.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["all_finite", "pow2_rescale", "safe_norms", "l2_normalize", "available_in_order"]

# Norms inside [2^-20, 2^40] come from elements whose squares neither overflow float32 (for any
# D < 2^40) nor lose relevant bits to underflow (the largest element is >= norm / sqrt(D)).
_SAFE_LOW = 2.0**-20
_SAFE_HIGH = 2.0**40


def all_finite(t: Tensor) -> bool:
    """True if every entry of ``t`` is finite (True when empty).

    One reduction pass, no temporary of ``t``'s size. Floating-point tensors up to 32 bits are
    summed in float64, where their finite values cannot overflow (NaN and inf propagate into the
    sum); float64 tensors by their minimum and maximum (NaN propagates into both, an infinity
    is one of them). Non-float tensors are always finite.
    """
    if t.numel() == 0 or not t.is_floating_point():
        return True
    if t.dtype == torch.float64:
        lo, hi = (float(v) for v in torch.aminmax(t.detach()))
        return math.isfinite(lo) and math.isfinite(hi)
    return bool(torch.isfinite(t.sum(dtype=torch.float64)))


def pow2_rescale(x: Tensor) -> Tensor:
    """float32 ``x * 2^-e`` with one power of two per vector (last axis) such that the vector's
    largest absolute entry lies in ``[0.5, 1)``; all-zero vectors stay zero. The scaling is done
    in ``x``'s own dtype (float64 values beyond float32's range survive), then cast.

    Args:
        x: float ``[..., D]``.

    Returns:
        float32 ``[..., D]``.
    """
    amax = x.detach().abs().amax(dim=-1, keepdim=True)
    _, exponent = torch.frexp(amax.double() if x.dtype != torch.float64 else amax)
    # frexp of 0, inf and NaN gives exponent 0: those vectors keep their scale (NaN/inf propagate)
    scale = torch.ldexp(torch.ones_like(amax, dtype=torch.float64), -exponent)
    return (x.detach().double() * scale).float()


def safe_norms(x: Tensor) -> tuple[Tensor, bool]:
    """float32 L2 norms ``[...]`` of ``x`` ``[..., D]`` along the last axis, computed directly,
    and whether they are all inside the range where the direct computation is accurate (finite,
    and neither overflowed nor underflowed). When it is False use :func:`pow2_rescale` first."""
    xf = x.float()
    norms = torch.linalg.vector_norm(xf, dim=-1)
    if norms.numel() == 0:
        return norms, True
    ok = bool(((norms >= _SAFE_LOW) & (norms <= _SAFE_HIGH)).all())
    return norms, ok


def l2_normalize(x: Tensor, eps: float = 1e-8, out: Tensor | None = None) -> Tensor:
    """float32 ``x / ||x||`` along the last axis, for vectors of any magnitude (into ``out`` if
    given).

    Vectors whose norm float32 cannot represent accurately (overflow or underflow of the sum of
    squares) are first rescaled by a power of two (:func:`pow2_rescale`), which does not change
    the direction; all-zero vectors stay zero (``eps`` floors the norm of a rescaled vector,
    which only an all-zero vector reaches).

    Args:
        x: float ``[..., D]`` (any floating dtype).
        eps: the floor of the (rescaled) norm.
        out: optional float32 tensor shaped like ``x``.

    Returns:
        float32 ``[..., D]``.
    """
    xf = x.float()
    norms, ok = safe_norms(xf)
    if not ok:
        xf = pow2_rescale(x)
        norms = torch.linalg.vector_norm(xf, dim=-1)
    norm = norms.clamp_min(eps).unsqueeze(-1)
    return xf / norm if out is None else torch.div(xf, norm, out=out)


def available_in_order(blocked: Tensor) -> tuple[Tensor, Tensor]:
    """For bool ``[B, n]`` blocked: (long ``[B, n]`` token indices with the pickable ones first,
    in raster order; long ``[B]`` count of pickable tokens per row)."""
    order = torch.argsort(blocked.to(torch.int8), dim=1, stable=True)
    return order, (~blocked).sum(dim=1)
