"""A 2 selectors x 2 budgets sweep end to end, checked against its offline W&B runs; export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from exp_helpers import TINY

from tokensel.experiments.config import ConfigError, load_config
from tokensel.experiments.sweep import expand_points, export_wandb_sweep, load_sweep, main as sweep_main, run_sweep
from tokensel.experiments.tracking import find_offline_runs, read_offline_run


def write_sweep(tmp_path: Path, dataset: Path, grid: dict, seeds=(0,), name="tiny-grid") -> Path:
    spec = {
        "name": name,
        "base": TINY,
        "overrides": [f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", "eval.progress=false", "logging.num_overlays=1"],
        "grid": grid,
        "seeds": list(seeds),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_sweep_runs_and_logs_what_it_prints(dataset, tmp_path, capsys):
    grid = {"selector.name": ["mmtok", "divprune"], "budget.k": [4, 8], "selector.params.alpha": [0.5]}
    spec, base = load_sweep(write_sweep(tmp_path, dataset, grid))
    rows = run_sweep(spec, base)
    printed = capsys.readouterr().out
    # alpha only applies to mmtok: 4 distinct points, not more
    assert [(r["selector"], r["k"], r.get("alpha")) for r in rows] == [
        ("mmtok", 4, 0.5), ("mmtok", 8, 0.5), ("divprune", 4, None), ("divprune", 8, None)
    ]
    assert "sweep tiny-grid: 4 runs" in printed
    for r in rows:
        run_dir = Path(r["run_dir"])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert r["accuracy"] == metrics["accuracy"] and r["mean_kept_tokens"] == r["k"]
        (wb,) = find_offline_runs(run_dir)
        logged = read_offline_run(wb)
        assert logged["group"] == "tiny-grid"
        assert logged["config"]["selector.name"] == r["selector"] and logged["config"]["budget.k"] == r["k"]
        for key in ("accuracy", "pope_f1", "pope_precision", "pope_recall", "pope_yes_ratio", "mean_kept_tokens", "prefill_ms", "selection_ms"):
            assert logged["summary"][key] == pytest.approx(metrics[key]), key
        # the printed summary table shows this run's accuracy
        assert f"{r['accuracy']:.4f}" in printed
    # the summary run: table with one row per point + accuracy-vs-k plot
    out = tmp_path / "runs" / "tiny-grid"
    (summary_wb,) = find_offline_runs(out / "summary")
    summary = read_offline_run(summary_wb)
    assert summary["group"] == "tiny-grid" and summary["summary"]["summary"]["nrows"] == 4
    assert "accuracy_vs_k" in summary["summary"] and (out / "accuracy_vs_k.png").is_file()
    table = json.loads((summary_wb / "files" / summary["summary"]["summary"]["path"]).read_text())
    acc = table["columns"].index("accuracy")
    assert [row[acc] for row in table["data"]] == pytest.approx([r["accuracy"] for r in rows])


def test_sweep_validates_every_point_first(dataset, tmp_path, capsys):
    path = write_sweep(tmp_path, dataset, {"selector.name": ["mmtok", "bogus"], "budget.k": [4]})
    assert sweep_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "selector.name" in err
    assert not (tmp_path / "runs").exists()  # nothing ran
    path = write_sweep(tmp_path, dataset, {"budget.k": [4, 0]})
    with pytest.raises(ConfigError, match="budget.k"):
        expand_points(*load_sweep(path))


def test_none_and_seeds_dedupe(dataset, tmp_path):
    path = write_sweep(tmp_path, dataset, {"selector.name": ["none", "random"], "budget.k": [4, 8]}, seeds=[0, 1])
    points = expand_points(*load_sweep(path))
    labels = [(p.cfg.selector.name, p.cfg.budget.k, p.cfg.eval.seed) for _, p in points]
    # 'none' ignores k -> one unpruned run per seed; 'random' gets the seed as a parameter
    assert [lab for lab in labels if lab[0] == "none"] == [("none", 4, 0), ("none", 4, 1)]
    assert len([lab for lab in labels if lab[0] == "random"]) == 4
    rand = [p for _, p in points if p.cfg.selector.name == "random"]
    assert {p.selector_params["seed"] for p in rand} == {0, 1}


def test_export_wandb_sweep_runs_same_runner(dataset, tmp_path, monkeypatch):
    grid = {"selector.name": ["mmtok", "divprune"], "budget.k": [4, None], "selector.params.alpha": [0.5]}
    path = write_sweep(tmp_path, dataset, grid)
    out = tmp_path / "wandb-sweep.yaml"
    repo = Path(TINY).parents[2]
    monkeypatch.chdir(repo)
    assert sweep_main([str(path), "--export-wandb", str(out)]) == 0
    d = yaml.safe_load(out.read_text())
    assert d["method"] == "grid" and d["program"] == "experiments/evaluate.py"
    assert d["command"] == ["${env}", "${interpreter}", "${program}", "experiments/configs/tiny.yaml", "${args_no_hyphens}"]
    assert d["parameters"]["selector.name"] == {"values": ["mmtok", "divprune"]}
    assert d["parameters"]["budget.k"] == {"values": [4, None]}
    assert d["parameters"]["eval.seed"] == {"values": [0]}
    assert d["parameters"]["selector.strict_params"] == {"value": False}
    assert d["parameters"]["dataset.path"] == {"value": str(dataset)}
    # what `wandb agent` would run for one point: key=value args as W&B formats them (None -> "None")
    args = [f"{k}={v['values'][-1] if 'values' in v else v['value']}" for k, v in d["parameters"].items()]
    assert "budget.k=None" in args and "selector.name=divprune" in args
    cfg = load_config(d["command"][3], args)
    assert cfg.budget.k is None and cfg.selector.name == "divprune" and cfg.logging.group == "tiny-grid"
    # run the command line the agent would build: ${env} ${interpreter} ${program} CONFIG ${args_no_hyphens}
    cmd = [sys.executable, d["program"], d["command"][3], *args, "logging.wandb_mode=disabled", "dataset.limit=2", "logging.run_name=agent"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # the script must find tokensel by itself
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "tiny-grid" / "agent" / "metrics.json").read_text())
    assert metrics["num_samples"] == 2 and metrics["mean_kept_tokens"] == 16
