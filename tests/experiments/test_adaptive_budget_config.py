"""budget.ratio and budget.adaptive in experiment configs: validation, eval statistics, sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from exp_helpers import TINY, offline_wandb_run

from tokensel import AdaptiveBudget
from tokensel.experiments.config import ConfigError, budget_args, budget_label, load_config
from tokensel.experiments.runner import prepare, run_eval
from tokensel.experiments.sweep import load_sweep, run_sweep

ADAPTIVE = ["budget.adaptive={k_max: 12, k_min: 2, coverage: 0.9}"]


def _common(dataset, tmp_path):
    return [f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", "eval.max_new_tokens=2",
            "eval.progress=false", "logging.num_overlays=0"]


def test_budget_args_and_labels(dataset, tmp_path):
    cfg = load_config(TINY, [*_common(dataset, tmp_path), "selector.name=mmtok", *ADAPTIVE])
    assert budget_args(cfg) == (AdaptiveBudget(12, k_min=2, coverage=0.9), None)
    assert budget_label(cfg) == "adaptive-kmax12-kmin2-cov0.9"
    cfg = load_config(TINY, [*_common(dataset, tmp_path), "selector.name=mmtok", "budget.k=null", "budget.ratio=0.25"])
    assert budget_args(cfg) == (None, 0.25) and budget_label(cfg) == "r0.25"


@pytest.mark.parametrize("extra, key, words", [
    (["budget.k=8", "budget.ratio=0.5"], "budget.k", "must be null"),
    (["budget.k=null", "budget.ratio=0"], "budget.ratio", "(0, 1]"),
    (["budget.k=null", "budget.ratio=1.5"], "budget.ratio", "(0, 1]"),
    (["budget.k=null", "budget.ratio=0.5", "budget.adaptive={k_max: 8, tol: 0.1}"], "budget.ratio", "both"),
    (["budget.k=null", "budget.adaptive={k_max: 8}"], "budget.adaptive", "stopping rule"),
    (["budget.k=null", "budget.adaptive={k_max: 0, tol: 0.1}"], "budget.adaptive", "k_max"),
    (["budget.k=null", "budget.adaptive={k_max: 8, coverage: 2}"], "budget.adaptive", "coverage"),
    (["budget.k=null", "budget.adaptive={k_max: 8, tol: 0.1, kmin: 2}"], "budget.adaptive", "kmin"),
    (["budget.k=null", "budget.adaptive={k_max: 8, tol: 0.1}", "selector.name=divprune"], "budget.adaptive",
     "no stopping rule"),
])
def test_bad_budgets_fail_before_the_model_loads(dataset, tmp_path, extra, key, words):
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [*_common(dataset, tmp_path), "selector.name=mmtok", *extra])
    assert key in str(info.value) and words in str(info.value)


def test_eval_with_adaptive_budget_reports_kept_token_statistics(dataset, tmp_path):
    result = run_eval(prepare(TINY, [*_common(dataset, tmp_path), "selector.name=mmtok", *ADAPTIVE]))
    m = result.metrics
    kept = [json.loads(x)["kept_tokens"] for x in (result.run_dir / "results.jsonl").read_text().splitlines()]
    assert len(kept) == 8 and all(2 <= c <= 12 for c in kept)
    assert m["mean_kept_tokens"] == pytest.approx(np.mean(kept))
    assert m["kept_tokens_median"] == pytest.approx(np.median(kept))
    assert m["kept_tokens_p10"] == pytest.approx(np.percentile(kept, 10))
    assert m["kept_tokens_p90"] == pytest.approx(np.percentile(kept, 90))
    doc = json.loads((result.run_dir / "metrics.json").read_text())
    assert doc["kept_tokens_p90"] == m["kept_tokens_p90"] and doc["config"]["budget"]["adaptive"]["k_max"] == 12
    assert "adaptive-kmax12" in result.run_dir.name
    for key in ("mean_kept_tokens", "kept_tokens_median", "kept_tokens_p10", "kept_tokens_p90"):
        assert doc[key] == pytest.approx(m[key])


def test_ratio_budget_runs(dataset, tmp_path):
    result = run_eval(prepare(TINY, [*_common(dataset, tmp_path), "selector.name=mmtok", "budget.k=null",
                                     "budget.ratio=0.25"]))
    assert result.metrics["mean_kept_tokens"] == 4  # a quarter of the tiny model's 16 tokens


def test_sweep_over_adaptive_coverage(dataset, tmp_path):
    spec = {"name": "adaptive-grid", "base": TINY,
            "overrides": [*_common(dataset, tmp_path), "selector.name=mmtok", "budget.k=null",
                          "budget.adaptive={k_max: 12, tol: null, coverage: 0.5}"],
            "grid": {"budget.adaptive.coverage": [0.5, 0.99]}, "seeds": [0]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    rows = run_sweep(*load_sweep(path))
    assert [r["budget.adaptive.coverage"] for r in rows] == [0.5, 0.99]
    assert rows[0]["mean_kept_tokens"] <= rows[1]["mean_kept_tokens"]
    assert len({Path(r["run_dir"]) for r in rows}) == 2
    assert [r["budget"] for r in rows] == ["adaptive-kmax12-kmin1-cov0.5", "adaptive-kmax12-kmin1-cov0.99"]
    # the summary plots the adaptive points at their mean of kept tokens and logs the plot to W&B
    out = tmp_path / "runs" / "adaptive-grid"
    assert offline_wandb_run(out / "summary")["images"]["accuracy_vs_mean_kept"] == 1
    from tokensel.experiments.plots import metric_figure

    (ax,) = metric_figure(rows, ["accuracy"], x="mean_kept", series_keys=["budget.adaptive.coverage"]).axes
    xs = sorted(float(c.lines[0].get_xdata()[0]) for c in ax.containers)
    assert xs == pytest.approx(sorted(r["mean_kept_tokens"] for r in rows))
