"""Argument checks written once, for every constructor and entry point of the library.

Each helper takes the parameter's ``name`` and its value, returns the value converted to its
canonical Python type, and raises a ``TypeError`` (wrong kind of value) or ``ValueError``
(right kind, bad value) whose message starts with the parameter's name and says what was
expected. Integer parameters accept any integral scalar (``int``, ``numpy.int64``, a 0-d
integer tensor) and refuse bools and floats; number parameters accept any real scalar and
refuse bools, strings, NaN and (unless allowed) infinities.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable, Sequence
from typing import SupportsIndex, TypeVar

import numpy as np
import torch

__all__ = [
    "check_budget",
    "check_int",
    "check_optional_int",
    "check_number",
    "check_bool",
    "check_choice",
    "check_int_sequence",
    "check_number_sequence",
    "reject_params",
]

C = TypeVar("C", bound=str)


def _is_bool(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.bool
    return isinstance(value, (bool, np.bool_))


def _as_int(name: str, value: object) -> int:
    if _is_bool(value) or isinstance(value, (float, str, bytes)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, torch.Tensor) and (value.dim() != 0 or value.is_floating_point() or value.is_complex()):
        raise TypeError(f"{name} must be an integer, got a tensor of shape {tuple(value.shape)} and dtype {value.dtype}")
    if isinstance(value, torch.Tensor) and value.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (it has no value)")
    try:
        if not isinstance(value, SupportsIndex):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})") from None


def _bounds_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return " and ".join(parts)


def _check_bounds(name: str, v: float, low, high, low_open: bool, high_open: bool, kind: str) -> None:
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high:
        raise ValueError(f"{name} must be {kind} {_bounds_text(low, high, low_open, high_open)}, got {v!r}")


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (either bound optional)."""
    v = _as_int(name, value)
    _check_bounds(name, v, low, high, False, False, "an integer")
    return v


def check_budget(k: object, name: str = "k") -> int:
    """Return ``k`` as an int, or raise unless it is an integer >= 1 (``int``, ``numpy.int64``,
    0-d integer tensor; bools and floats are refused). A token budget (selectors, solvers)."""
    return check_int(name, k, 1)


def check_optional_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int | None:
    """Like :func:`check_int`, but ``None`` passes through."""
    return None if value is None else check_int(name, value, low, high)


def check_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as a finite ``float`` within the bounds (``low_open``: strictly above ``low``)."""
    if _is_bool(value) or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_complex():
            raise TypeError(f"{name} must be a number, got a tensor of shape {tuple(value.shape)}")
        if value.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (it has no value)")
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    _check_bounds(name, v, low, high, low_open, high_open, "a number")
    return v


def check_bool(name: str, value: object) -> bool:
    """``value`` as a ``bool``; only real booleans are accepted (``"no"`` is not False)."""
    if isinstance(value, bool):
        return value
    if _is_bool(value) and not isinstance(value, torch.Tensor):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_choice(name: str, value: object, choices: Sequence[C]) -> C:
    """``value`` if it is one of ``choices`` (strings; a tuple of ``Literal`` strings gives that
    ``Literal`` type)."""
    for choice in choices:
        if isinstance(value, str) and choice == value:
            return choice
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _as_sequence(name: str, value: object, what: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence of {what}, got {value!r}")
    if isinstance(value, torch.Tensor):
        value = value.tolist() if value.dim() else [value]
    return list(value)


def check_int_sequence(name: str, value: object, low: int | None = None, *, min_len: int = 1) -> tuple[int, ...]:
    """``value`` (a list, tuple or 1-D tensor of integers, each >= ``low``) as a tuple of ints."""
    items = _as_sequence(name, value, "integers")
    if len(items) < min_len:
        raise ValueError(f"{name} must hold at least {min_len} integer(s), got {value!r}")
    return tuple(check_int(f"{name}[{i}]", x, low) for i, x in enumerate(items))


def check_number_sequence(
    name: str, value: object, low: float | None = None, *, low_open: bool = False, length: int | None = None
) -> tuple[float, ...]:
    """``value`` (a sequence of finite numbers, each above ``low``) as a tuple of floats."""
    items = _as_sequence(name, value, "numbers")
    if length is not None and len(items) != length:
        raise ValueError(f"{name} must hold {length} number(s), got {len(items)}: {value!r}")
    return tuple(check_number(f"{name}[{i}]", x, low, low_open=low_open) for i, x in enumerate(items))


def reject_params(owner: str, args: tuple, kwargs: dict) -> None:
    """Raise a ``TypeError`` naming ``owner`` if it was given any parameter (it takes none)."""
    if args or kwargs:
        given = [repr(a) for a in args] + sorted(kwargs)
        raise TypeError(f"{owner} takes no parameters, got {', '.join(given)}")
