"""Figures of evaluation results, shared by ``tokensel sweep`` summaries and ``tokensel demo``.

* :func:`metric_figure`: a metric against the budget k, against the mean number of kept
  vision tokens (``x="mean_kept"``: fixed-k curves and adaptive-budget points on one axis),
  against the analytic FLOPs (``x="flops"``) or the prefill time (``x="prefill_ms"``) of the
  cost ledger, with +/- one standard error bars;
* :func:`draw_kept` / :func:`kept_tokens_figure`: the patches a selector kept, framed on the
  image (several examples, the same ones for every selector).

Rows are summary rows (:func:`tokensel.experiments.sweep.summary_rows`): ``selector``, ``k``
(None for adaptive / ratio budgets), ``budget`` (``k16``, ``adaptive-...``, ``full``), the metrics
with their ``<metric>_stderr`` and the other grid keys. Figures are matplotlib ``Figure`` objects
built without pyplot, so the caller's backend stays as it is.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

__all__ = ["is_unpruned_row", "metric_figure", "draw_kept", "kept_tokens_figure", "X_AXES", "X_KEYS"]

#: ``x`` of :func:`metric_figure`: the budget k, the measured mean of kept tokens per sample, the
#: analytic FLOPs per sample (the cost ledger's ``flops_total``) or the warm prefill time of the
#: decoder layers per sample (``lm_prefill_ms``).
X_AXES = {"k": "k (vision tokens kept)", "mean_kept": "mean kept vision tokens per sample",
          "flops": "FLOPs per sample (analytic: vision + projector + LM prefill + decode)",
          "prefill_ms": "LM prefill ms per sample (decoder layers, warm)"}
#: The summary-row column of each ``x`` but ``k``.
X_KEYS = {"k": "k", "mean_kept": "mean_kept_tokens", "flops": "flops_total", "prefill_ms": "lm_prefill_ms"}

_NOT_A_SERIES_KEY = {"selector", "k", "budget", "run_dir", "seed", *X_KEYS.values(), "mean_equivalent_tokens",
                     "peak_memory_mb"}


def is_unpruned_row(row: dict) -> bool:
    """True for the row of an unpruned run (``selector: none`` or no budget at all)."""
    if row.get("selector") in (None, "none"):
        return True
    return row.get("k") is None and row.get("budget", "full") == "full"


def _series(rows: list[dict], metric: str, skip: set, x: str, keys: Optional[Sequence[str]]) -> dict[tuple[str, bool], list]:
    """``(label, adaptive) -> [(x, y, stderr)]`` for the pruned rows with ``metric`` recorded:
    one series per selector and value of the columns ``keys`` (None: every column besides
    ``skip``)."""
    out: dict[tuple[str, bool], list] = {}
    for r in rows:
        if is_unpruned_row(r) or r.get(metric) is None:
            continue
        fixed = r.get("k") is not None
        xv = r.get(X_KEYS[x])
        if xv is None:  # an adaptive point has no k; a run without kept-token counts / a ledger no x
            continue
        shown = [k for k in r if k not in skip and not k.endswith("_stderr")] if keys is None else keys
        extra = ",".join(f"{k}={r[k]}" for k in shown if not k.startswith("budget.") and r.get(k) is not None)
        label = r["selector"] + (f" ({extra})" if extra else "")
        if not fixed:
            label += f" [{r.get('budget', 'adaptive')}]"
        out.setdefault((label, not fixed), []).append((xv, r[metric], r.get(f"{metric}_stderr")))
    return out


def _mean_over_seeds(points: list) -> tuple[list, list, list]:
    by_x: dict = {}
    for xv, v, se in points:
        by_x.setdefault(xv, []).append((v, se))
    xs = sorted(by_x)
    ys = [sum(v for v, _ in by_x[xv]) / len(by_x[xv]) for xv in xs]
    ses = [sum(se or 0.0 for _, se in by_x[xv]) / len(by_x[xv]) for xv in xs]
    return xs, ys, ses


def _draw_metric(ax, rows: list[dict], metric: str, skip: set, x: str, scale: float, keys) -> None:
    from matplotlib import colormaps

    series = sorted(_series(rows, metric, skip, x, keys).items())
    palette = colormaps["tab10" if len(series) <= 10 else "tab20"]
    for i, ((label, adaptive), pts) in enumerate(series):
        xs, ys, ses = _mean_over_seeds(pts)
        ax.errorbar(xs, [scale * y for y in ys], yerr=[scale * s for s in ses], capsize=3, label=label,
                    color=palette(i % palette.N),
                    marker="D" if adaptive else "o", linestyle="none" if adaptive else "-",
                    linewidth=2.5 if label == "mmtok" else 1.2)
    for r in rows:
        if is_unpruned_row(r) and r.get(metric) is not None:
            ax.axhline(scale * r[metric], color="grey", linestyle="--", label="unpruned")
            se = r.get(f"{metric}_stderr")
            if se:
                ax.axhspan(scale * (r[metric] - se), scale * (r[metric] + se), color="grey", alpha=0.15)
            if x in ("flops", "prefill_ms") and r.get(X_KEYS[x]) is not None:  # the unpruned model's own cost
                ax.errorbar([r[X_KEYS[x]]], [scale * r[metric]], yerr=[scale * (se or 0.0)], color="black",
                            marker="*", markersize=10, capsize=3, linestyle="none", label="unpruned (its cost)")
            break
    if x == "prefill_ms":
        ax.set_xscale("linear")
    else:
        ax.set_xscale("log", base=10 if x == "flops" else 2)
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel(f"{metric}{' (%)' if scale == 100 else ''} (+/- 1 s.e.)")
    ax.grid(alpha=0.3)


def metric_figure(
    rows: list[dict],
    metrics: Sequence[str] = ("accuracy",),
    *,
    x: str = "k",
    metric_keys: Sequence[str] = (),
    series_keys: Optional[Sequence[str]] = None,
    scale: float = 1.0,
    title: Optional[str] = None,
):
    """A figure with one panel per metric of ``metrics`` against ``x`` (a key of
    :data:`X_AXES`), +/- one standard error (the rows' ``<metric>_stderr``): one line per selector
    configuration of fixed-k rows (mean over seeds), one marker per adaptive-budget
    configuration (``x="mean_kept"`` only: an adaptive run has no k), the unpruned run as a dashed
    line with its error band. Series: one per selector and value of the columns ``series_keys``
    (the swept parameters; None: every configuration column, i.e. every column but the metrics and
    ``metric_keys``); ``scale``: factor for the values (100 for percent). The legend stands
    right of the last panel: save with ``bbox_inches="tight"``."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {sorted(X_AXES)}, got {x!r}")
    from matplotlib.figure import Figure

    from tokensel.experiments.runner import HEADLINE_METRICS

    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics: give at least one metric to plot")
    skip = {*_NOT_A_SERIES_KEY, *HEADLINE_METRICS, *metric_keys}
    skip |= {k for r in rows for k in r if k.startswith(("acc/", "kept_tokens_", "pope"))}
    fig = Figure(figsize=(5.5 * len(metrics), 4))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        _draw_metric(ax, rows, metric, skip | {metric}, x, scale, series_keys)
    if axes[-1].get_legend_handles_labels()[0]:  # beside the last panel: save with bbox_inches="tight"
        axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def draw_kept(ax: Any, image: Any, indices: Any, title: Optional[str] = None, grid: int = 24, patch: int = 14) -> None:
    """Draw ``image`` (PIL or uint8 array ``[H, W, 3]``, ``grid * patch`` pixels square) on the
    matplotlib axes ``ax``: the patches in ``indices`` (any shape; raster order 0 .. grid*grid - 1,
    others ignored) framed, the rest faded; ``indices=None`` draws the image as it is."""
    import matplotlib.patches as patches
    import numpy as np

    img = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if indices is None:
        ax.imshow(img)
    else:
        ax.imshow((img * 0.35 + 255 * 0.65).astype(np.uint8))
        for j in np.asarray(indices).reshape(-1):
            if 0 <= int(j) < grid * grid:
                y, x = divmod(int(j), grid)
                ax.add_patch(patches.Rectangle((x * patch, y * patch), patch, patch,
                                               facecolor="none", edgecolor="black", linewidth=1.0))
                ax.imshow(img[y * patch:(y + 1) * patch, x * patch:(x + 1) * patch],
                          extent=(x * patch, (x + 1) * patch, (y + 1) * patch, y * patch))
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)


def kept_tokens_figure(
    examples: Sequence[dict],
    panels: Sequence[tuple[str, Sequence[Optional[dict]]]],
    *,
    grid: int = 24,
    patch: int = 14,
    title: Optional[str] = None,
):
    """One row per example, one column per panel: ``examples`` are dicts with ``image`` (PIL
    or array), ``question`` and ``answer``; ``panels`` are ``(name, cells)`` with one cell per
    example: None (not recorded) or a dict with ``prediction`` and ``kept_indices`` (None: all
    tokens, the image drawn as it is). Every panel shows the same examples, so selectors compare
    side by side."""
    from matplotlib.figure import Figure

    if not examples or not panels:
        raise ValueError("kept_tokens_figure: needs at least one example and one panel")
    for name, cells in panels:
        if len(cells) != len(examples):
            raise ValueError(f"panel {name!r} has {len(cells)} cells for {len(examples)} examples")
    fig = Figure(figsize=(2.6 * len(panels), 2.9 * len(examples)))
    axes = fig.subplots(len(examples), len(panels), squeeze=False)
    for row, ex in enumerate(examples):
        for col, (name, cells) in enumerate(panels):
            ax, cell = axes[row][col], cells[row]
            if cell is None:
                ax.axis("off")
                continue
            draw_kept(ax, ex["image"], cell.get("kept_indices"), f"{name}: {cell.get('prediction')}", grid, patch)
        axes[row][0].set_ylabel(f"{ex['question']}\n(truth: {ex['answer']})", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
