"""Plain-text tables for results printed to the terminal."""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["format_table", "format_value", "metrics_table"]


def format_value(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None, title: str | None = None) -> str:
    """Rows of dicts as an aligned text table; numbers right-aligned."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[format_value(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(line(list(columns)))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def metrics_table(metrics: dict, title: str | None = None) -> str:
    """A two-column metric / value table."""
    return format_table([{"metric": k, "value": v} for k, v in metrics.items()], ["metric", "value"], title=title)
