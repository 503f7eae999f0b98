"""Argument types of the command line, written once: each parses one option's text or raises
:class:`argparse.ArgumentTypeError`, which argparse reports as a usage error (exit 2) naming
the option (``tokensel bench: error: argument --reps: must be an integer >= 1, got '0'``).

Use as ``parser.add_argument("--reps", type=int_at_least(1))``. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import re
from typing import Callable, Optional, Sequence

__all__ = ["int_at_least", "float_above", "int_list", "size_grid", "n_k_pairs", "device_name"]


def _named(fn: Callable, name: str) -> Callable:
    fn.__name__ = name  # argparse shows it in "invalid <name> value" for other errors
    return fn


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer ``>= low``."""

    def parse(text: str) -> int:
        value = _int(text, f"must be an integer >= {low}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return _named(parse, f"int >= {low}")


def float_above(low: float) -> Callable[[str], float]:
    """A finite number ``> low``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number > {low:g}, got {text!r}") from None
        if not value > low or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number > {low:g}, got {text!r}")
        return value

    return _named(parse, f"number > {low:g}")


def int_list(low: int) -> Callable[[str], list[int]]:
    """Comma-separated integers, each ``>= low`` (at least one): ``"1,2"`` -> ``[1, 2]``."""

    def parse(text: str) -> list[int]:
        items = text.split(",")
        what = f"must be comma-separated integers >= {low} (e.g. {low},{low + 1})"
        if not text.strip() or any(not item.strip() for item in items):
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
        try:
            values = [int(item.strip()) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
        if any(v < low for v in values):
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
        return values

    return _named(parse, "integer list")


_GRID_ITEM = re.compile(r"^\s*(?:(\d+)x)?(\d+)/(\d+)\s*$")


def size_grid(text: str) -> list[tuple[int, int, int]]:
    """``"576/64,5x576/32"`` -> ``[(1, 576, 64), (5, 576, 32)]``: batch x tokens / budget, with
    ``B >= 1`` and ``1 <= k <= n``."""
    grid = []
    for item in text.split(","):
        m = _GRID_ITEM.match(item)
        if m is None:
            raise argparse.ArgumentTypeError(f"expected items like 576/64 or 5x576/32, got {item!r}")
        b, n, k = int(m.group(1) or 1), int(m.group(2)), int(m.group(3))
        if b < 1 or n < 1 or not 1 <= k <= n:
            raise argparse.ArgumentTypeError(
                f"{item!r}: needs a batch >= 1, tokens n >= 1 and a budget 1 <= k <= n")
        grid.append((b, n, k))
    return grid


def n_k_pairs(text: str) -> tuple[int, int]:
    """``"3000:100"`` -> ``(3000, 100)`` with ``1 <= k <= n``."""
    m = re.match(r"^\s*(\d+):(\d+)\s*$", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected n:k (e.g. 3000:100), got {text!r}")
    n, k = int(m.group(1)), int(m.group(2))
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: needs 1 <= k <= n")
    return n, k


def device_name(kinds: Sequence[str] = ("cpu", "cuda")) -> Callable[[str], str]:
    """A torch device of one of ``kinds``: ``cpu``, ``cuda`` or ``cuda:N``."""

    def parse(text: str) -> str:
        m = re.match(r"^([a-z]+)(?::(\d+))?$", text.strip())
        kind: Optional[str] = m.group(1) if m else None
        index: Optional[str] = m.group(2) if m else None
        if kind not in kinds or (kind == "cpu" and index is not None):
            shown = ", ".join(f"{k}" + (" or cuda:N" if k == "cuda" else "") for k in kinds)
            raise argparse.ArgumentTypeError(f"must be a device: {shown}; got {text!r}")
        return text.strip()

    return _named(parse, "device")
