"""A 2 selectors x 2 budgets sweep end to end, checked against its run folders and its offline
W&B runs (their documented files); export."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from exp_helpers import TINY, installed_copy, offline_wandb_run, wandb_sync_dry_run

from tokensel.experiments.config import ConfigError
from tokensel.experiments.sweep import expand_points, load_sweep, run_sweep
from tokensel.experiments.sweep import main as sweep_main


def write_sweep(tmp_path: Path, dataset: Path, grid: dict, seeds=(0,), name="tiny-grid") -> Path:
    spec = {
        "name": name,
        "base": TINY,
        "overrides": [f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", "eval.progress=false",
                      "logging.num_overlays=1"],
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
    assert "sweep tiny-grid: 4 finished runs" in printed
    for r in rows:
        run_dir = Path(r["run_dir"])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert r["accuracy"] == metrics["accuracy"] and r["mean_kept_tokens"] == r["k"]
        assert metrics["config"]["selector"]["name"] == r["selector"] and metrics["config"]["budget"]["k"] == r["k"]
        assert metrics["config"]["logging"]["group"] == "tiny-grid"
        run = offline_wandb_run(run_dir)
        assert len(run["tables"]["results"]["data"]) == metrics["num_samples"] and run["images"]["selection_overlays"] == 1
        # the printed summary table shows this run's accuracy
        assert f"{r['accuracy']:.4f}" in printed
    # the summary run: table with one row per point + accuracy-vs-k plot
    out = tmp_path / "runs" / "tiny-grid"
    summary = offline_wandb_run(out / "summary")
    table = summary["tables"]["summary"]
    assert len(table["data"]) == 4 and summary["images"]["accuracy_vs_k"] == 1 and (out / "accuracy_vs_k.png").is_file()
    assert summary["run_id"] in wandb_sync_dry_run(out / "summary")
    assert summary["images"]["accuracy_vs_mean_kept"] == 1 and (out / "accuracy_vs_mean_kept.png").is_file()
    for x in ("flops", "prefill_ms"):  # the cost ledger's axes, in W&B and beside the summary
        assert summary["images"][f"accuracy_vs_{x}"] == 1 and (out / f"accuracy_vs_{x}.png").is_file()
    flops = table["columns"].index("flops_total")
    assert [row[flops] for row in table["data"]] == [
        json.loads((Path(r["run_dir"]) / "metrics.json").read_text())["flops_total"] for r in rows]
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


def test_extra_points_follow_the_grid_and_are_validated(dataset, tmp_path):
    """``points``: adaptive budgets beside a fixed-k grid, each crossed with the seeds, after
    the grid's points; a point that is not a mapping, or a bad value in one, is a config error."""
    path = write_sweep(tmp_path, dataset, {"selector.name": ["mmtok"], "budget.k": [4, 8]}, seeds=[0, 1])
    spec = yaml.safe_load(path.read_text())
    spec["points"] = [{"selector.name": "mmtok", "budget.k": None, "budget.adaptive.k_max": 8,
                       "budget.adaptive.coverage": c} for c in (0.5, 0.9)]
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    points = expand_points(*load_sweep(path))
    got = [(p.cfg.budget.k, p.cfg.budget.adaptive.coverage if p.cfg.budget.adaptive else None, p.cfg.eval.seed)
           for _, p in points]
    assert got == [(4, None, 0), (4, None, 1), (8, None, 0), (8, None, 1),
                   (None, 0.5, 0), (None, 0.5, 1), (None, 0.9, 0), (None, 0.9, 1)]
    spec["grid"] = {}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert len(expand_points(*load_sweep(path))) == 4  # an empty grid with points: the points only
    for bad, match in (([{}], "points\\[0\\]"), ([{"selector.name": "mmtok", "budget.k": None,
                                                     "budget.adaptive.k_max": 0, "budget.adaptive.coverage": 0.5}],
                                                   "k_max")):
        spec["points"] = bad
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        with pytest.raises(ConfigError, match=match):
            expand_points(*load_sweep(path))


def test_export_wandb_sweep_runs_the_same_points_from_an_installed_package(dataset, tmp_path, monkeypatch):
    grid = {"selector.name": ["mmtok", "divprune"], "budget.k": [4, None], "selector.params.alpha": [0.5, 0.3]}
    path = write_sweep(tmp_path, dataset, grid)
    local = expand_points(*load_sweep(path))
    # 8 grid combinations; k=null makes both selectors the one unpruned run; divprune drops alpha
    assert [p.label for p, _ in local] == [
        "mmtok k=4 alpha=0.5 seed=0", "mmtok k=4 alpha=0.3 seed=0", "none (unpruned) seed=0", "divprune k=4 seed=0"
    ]
    out = tmp_path / "wandb-sweep.yaml"
    monkeypatch.chdir(tmp_path)
    assert sweep_main([str(path), "--export-wandb", str(out)]) == 0
    d = yaml.safe_load(out.read_text())
    assert d["method"] == "grid" and d["parameters"] == {"point": {"values": [0, 1, 2, 3]}}
    assert d["command"] == ["${env}", "tokensel", "sweep", "sweep.yaml", "${args_no_hyphens}"]
    assert "experiments/" not in out.read_text()
    # what `wandb agent` runs for point 3: /usr/bin/env tokensel sweep sweep.yaml point=3
    cmd = [{"${env}": "/usr/bin/env", "${args_no_hyphens}": "point=3"}.get(c, c) for c in d["command"]]
    proc = subprocess.run(cmd, cwd=tmp_path, env=installed_copy(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "runs" / "tiny-grid").iterdir() if p.is_dir()]
    doc = json.loads((run_dir / "metrics.json").read_text())
    assert doc["config"]["selector"]["name"] == "divprune" and doc["config"]["selector"]["params"] == {"alpha": None}
    assert doc["environment"]["tokensel_path"] == str(tmp_path / "site" / "tokensel")
    assert doc["environment"]["tokensel_git_commit"] is None  # not a checkout
    # the local sweep recognises the agent's point as finished: the same run key
    rows = run_sweep(*load_sweep(path), print_results=False)
    assert len(rows) == 4 and rows[3]["run_dir"] == str(run_dir)
    assert json.loads((run_dir / "metrics.json").read_text()) == doc  # not rerun
    with pytest.raises(ConfigError, match="point"):
        run_sweep(*load_sweep(path, ["point=4"]), print_results=False)
