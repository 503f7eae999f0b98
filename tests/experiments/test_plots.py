"""Figures shared by sweep summaries and the demo: metric against k and against mean kept
tokens (fixed-k curves and adaptive points, error bars), kept-token overlays; the relative
score and changed answers of the metrics module."""

from __future__ import annotations

import numpy as np
import pytest

from tokensel.experiments.metrics import QuestionMismatch, changed_predictions, relative_to_full
from tokensel.experiments.plots import draw_kept, is_unpruned_row, kept_tokens_figure, metric_figure

ROWS = [
    {"selector": "none", "k": None, "budget": "full", "accuracy": 0.9, "accuracy_stderr": 0.01, "mean_kept_tokens": 576},
    {"selector": "mmtok", "k": 4, "budget": "k4", "accuracy": 0.6, "accuracy_stderr": 0.05, "mean_kept_tokens": 4.0},
    {"selector": "mmtok", "k": 16, "budget": "k16", "accuracy": 0.8, "accuracy_stderr": 0.04, "mean_kept_tokens": 16.0},
    {"selector": "mmtok", "k": None, "budget": "adaptive-kmax64-kmin4-cov0.9", "accuracy": 0.75,
     "accuracy_stderr": 0.03, "mean_kept_tokens": 9.5},
]


def _plotted(ax):
    """(label, x values, y values, error half-widths) of each errorbar series on ``ax``."""
    out = []
    for container in ax.containers:
        data_line, _caps, (bars,) = container.lines
        xs, ys = data_line.get_data()
        half = [abs(seg[1][1] - seg[0][1]) / 2 for seg in bars.get_segments()]
        out.append((container.get_label(), list(xs), list(ys), half))
    return sorted(out)


def test_mean_kept_axis_holds_the_fixed_curve_and_the_adaptive_point_with_error_bars():
    fig = metric_figure(ROWS, ["accuracy"], x="mean_kept", series_keys=[], scale=100.0)
    (ax,) = fig.axes
    (fixed, adaptive) = _plotted(ax)
    assert fixed[0] == "mmtok" and fixed[1] == [4.0, 16.0] and fixed[2] == pytest.approx([60.0, 80.0])
    assert fixed[3] == pytest.approx([5.0, 4.0])
    assert adaptive[0].startswith("mmtok [adaptive") and adaptive[1] == [9.5] and adaptive[2] == pytest.approx([75.0])
    assert adaptive[3] == pytest.approx([3.0])
    assert adaptive_line_style(ax, adaptive[0]) == "None"  # a point, not a curve
    # the unpruned run: a dashed line at its value, not a point of any series
    assert [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"] == pytest.approx([90.0])


@pytest.mark.parametrize("x, key", [("flops", "flops_total"), ("prefill_ms", "lm_prefill_ms")])
def test_cost_axes_place_every_run_at_its_ledger_value(x, key):
    """Against the ledger's FLOPs / prefill time: the fixed-k curve and the adaptive point at
    their runs' values, the unpruned run at its own cost (a star with its error bar) and line."""
    costs = [1e9, 2e8, 3e8, 2.5e8] if x == "flops" else [9.0, 2.0, 3.0, 2.5]
    rows = [dict(r, **{key: c}) for r, c in zip(ROWS, costs)]
    fig = metric_figure(rows, ["accuracy"], x=x, series_keys=[], scale=100.0)
    (ax,) = fig.axes
    got = {label: (xs, ys, half) for label, xs, ys, half in _plotted(ax)}
    assert got["mmtok"][0] == costs[1:3] and got["mmtok"][1] == pytest.approx([60.0, 80.0])
    assert got["unpruned (its cost)"][0] == [costs[0]] and got["unpruned (its cost)"][2] == pytest.approx([1.0])
    (adaptive,) = [label for label in got if "adaptive" in label]
    assert got[adaptive][0] == [costs[3]]
    assert ax.get_xscale() == ("log" if x == "flops" else "linear") and key not in ax.get_legend_handles_labels()[1]


def adaptive_line_style(ax, label):
    (container,) = [c for c in ax.containers if c.get_label() == label]
    return container.lines[0].get_linestyle()


def test_k_axis_leaves_out_the_adaptive_point_and_does_not_take_it_for_the_unpruned_run():
    fig = metric_figure(ROWS, ["accuracy"], x="k")
    (ax,) = fig.axes
    assert [(label, xs) for label, xs, _, _ in _plotted(ax)] == [("mmtok", [4, 16])]
    assert [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"] == pytest.approx([0.9])


def test_series_per_swept_parameter_and_bad_arguments():
    rows = [dict(r, alpha=a) for r in ROWS[1:3] for a in (0.0, 0.5)]
    fig = metric_figure(rows, ["accuracy", "accuracy"], series_keys=["alpha"])
    assert len(fig.axes) == 2
    assert sorted(label for label, *_ in _plotted(fig.axes[0])) == ["mmtok (alpha=0.0)", "mmtok (alpha=0.5)"]
    with pytest.raises(ValueError, match="x must be one of"):
        metric_figure(ROWS, x="ratio")
    with pytest.raises(ValueError, match="metrics"):
        metric_figure(ROWS, [])
    assert is_unpruned_row(ROWS[0]) and not is_unpruned_row(ROWS[3])


def test_draw_kept_frames_exactly_the_kept_patches():
    from matplotlib.figure import Figure

    image = np.full((336, 336, 3), 200, dtype=np.uint8)
    ax = Figure().subplots()
    draw_kept(ax, image, np.array([[0, 25, 575, 576]]), "t")  # 576 is out of range: ignored
    frames = sorted((int(r.get_x()), int(r.get_y())) for r in ax.patches)
    assert frames == [(0, 0), (14, 14), (23 * 14, 23 * 14)]
    assert ax.get_title() == "t"


def test_kept_tokens_figure_one_row_per_example_one_column_per_panel():
    image = np.full((336, 336, 3), 200, dtype=np.uint8)
    examples = [{"image": image, "question": f"q{i}", "answer": "yes"} for i in range(3)]
    panels = [("all", [{"prediction": "yes", "kept_indices": None}] * 3),
              ("mmtok", [{"prediction": "no", "kept_indices": [i]} for i in range(3)])]
    fig = kept_tokens_figure(examples, panels)
    assert len(fig.axes) == 6
    assert [len(ax.patches) for ax in fig.axes] == [0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="cells for 3 examples"):
        kept_tokens_figure(examples, [("x", [None])])


def test_relative_to_full_and_changed_predictions():
    assert relative_to_full({"accuracy": 45.0, "pope_f1": 80.0}, {"accuracy": 90.0, "pope_f1": 80.0}) == 75.0
    assert relative_to_full({"accuracy": 45.0, "pope_f1": float("nan")}, {"accuracy": 90.0, "pope_f1": 0.0}) == 50.0
    assert np.isnan(relative_to_full({}, {"accuracy": 1.0}))
    a = [{"id": i, "question": "q", "answer": "yes", "prediction": p} for i, p in enumerate(["yes", "no", "yes"])]
    b = [dict(r, prediction="yes") for r in a]
    assert changed_predictions(a, b) == 1 and changed_predictions(a, a) == 0
    with pytest.raises(QuestionMismatch):
        changed_predictions(a, b[:2])
