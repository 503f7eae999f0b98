"""The command line's one error boundary: a subcommand's exception becomes one line on stderr
and an exit code (``tokensel --debug`` / ``TOKENSEL_DEBUG=1`` also print the traceback).

It lives here, below :mod:`tokensel.experiments.cli`, so that the experiments' entry points
(``python -m tokensel.experiments.evaluate`` ...) share it without importing the command line.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable

__all__ = ["guarded"]


def _debug() -> bool:
    return os.environ.get("TOKENSEL_DEBUG", "").lower() not in ("", "0", "false", "no")


def _input_errors() -> tuple[type, ...]:
    from tokensel.experiments.config import ConfigError
    from tokensel.experiments.datasets import DatasetError

    return (ConfigError, DatasetError)


def guarded(name: str, fn: Callable[[list[str]], Any], argv: list[str]) -> int:
    """``fn(argv)`` as subcommand ``name``: any exception becomes one line on stderr and an
    exit code (the traceback too with ``TOKENSEL_DEBUG=1``)."""
    try:
        return int(fn(argv) or 0)
    except KeyboardInterrupt:
        print(f"tokensel {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the command line's one error boundary
        if _debug():
            traceback.print_exc()
        kind = "config error" if isinstance(exc, _input_errors()) else f"error ({type(exc).__name__})"
        message = " ".join(str(exc).split()) or type(exc).__name__
        hint = "" if _debug() else "  [traceback: tokensel --debug ...]"
        print(f"tokensel {name}: {kind}: {message}{hint}", file=sys.stderr)
        return 2 if isinstance(exc, _input_errors()) else 1
