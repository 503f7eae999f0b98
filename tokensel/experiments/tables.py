"""Plain-text tables for results printed to the terminal."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

__all__ = ["format_table", "format_value", "metrics_table", "format_ci", "results_tables", "mme_table", "is_error_bar_key"]


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


def is_error_bar_key(key: str) -> bool:
    return key.endswith(("_stderr", "_ci", "_ci_low", "_ci_high")) or key in ("ci_level", "bootstrap_samples")


def format_ci(ci: Any, digits: int = 4) -> str:
    """``[lo, hi]`` as text; ``-`` when missing."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return "-"
    return f"[{format_value(float(ci[0]), digits)}, {format_value(float(ci[1]), digits)}]"


def _with_bars(row: dict, metrics: dict, key: str, label: str = "") -> dict:
    label = label or key
    row[f"{label}"] = metrics.get(key)
    if f"{key}_stderr" in metrics or f"{key}_ci" in metrics:
        row["+/- stderr"] = metrics.get(f"{key}_stderr")
        row["95% CI"] = format_ci(metrics.get(f"{key}_ci"))
    return row


def metrics_table(metrics: dict, title: str | None = None, keys: Sequence[str] | None = None) -> str:
    """A metric / value table; with the metrics' ``<key>_stderr`` and ``<key>_ci`` entries
    (see :func:`tokensel.experiments.metrics.error_bars`), also ``+/- stderr`` and ``95% CI``."""
    keys = [k for k in metrics if not is_error_bar_key(k)] if keys is None else [k for k in keys if k in metrics]
    rows = [_with_bars({"metric": k}, metrics, k, "value") for k in keys]
    cols = ["metric", "value"] + (["+/- stderr", "95% CI"] if any("95% CI" in r for r in rows) else [])
    return format_table(rows, cols, title=title)


def results_tables(
    metrics: dict, headline: Sequence[str], title: str | None = None,
    tables: Sequence[Callable[[dict], str | None]] = (),
) -> str:
    """The console report of one run: headline metrics, accuracy per category and POPE per
    negative-sampling mode, each with error bars where computed, then the dataset's own
    ``tables`` (``table(metrics) -> str | None``, e.g. :func:`mme_table`)."""
    parts = [metrics_table(metrics, title=title, keys=["num_samples", *headline])]
    cats = sorted(k for k in metrics if k.startswith("acc/") and not is_error_bar_key(k))
    if cats:
        rows = [_with_bars({"category": k[4:]}, metrics, k, "accuracy") for k in cats]
        parts.append(format_table(rows, ["category", "accuracy", "+/- stderr", "95% CI"]))
    modes = sorted({k.split("/")[1] for k in metrics if k.startswith("pope/")})
    if modes:
        rows = []
        for m in modes:
            row = _with_bars({"pope mode": m}, metrics, f"pope/{m}/f1", "f1")
            row.update({f: metrics.get(f"pope/{m}/{f}") for f in ("precision", "recall", "yes_ratio")})
            rows.append(row)
        parts.append(format_table(rows, ["pope mode", "f1", "+/- stderr", "95% CI", "precision", "recall", "yes_ratio"]))
    parts += [t for t in (table(metrics) for table in tables) if t]
    return "\n\n".join(parts)


def mme_table(metrics: dict) -> str | None:
    """The MME table (acc, acc+ and score per category), or None without ``mme_score``."""
    if "mme_score" not in metrics:
        return None
    mme = sorted(k[4:-6] for k in metrics if k.startswith("mme/") and k.endswith("/score"))
    rows = [
        {"category": c, "acc": metrics[f"mme/{c}/acc"], "acc+": metrics[f"mme/{c}/acc_plus"],
         "score": metrics[f"mme/{c}/score"]}
        for c in mme
    ]
    return format_table(rows, ["category", "acc", "acc+", "score"], title="MME")
