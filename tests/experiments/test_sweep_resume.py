"""Sweeps that survive reality: reruns skip finished points, interrupted points resume,
shards split the work, the summary is rebuilt from every finished run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from exp_helpers import TINY, offline_wandb_run

import tokensel
from tokensel.batch import Selection
from tokensel.experiments.modeling import LoadedModel, build_tiny_llava, register_model
from tokensel.experiments.sweep import load_sweep, run_sweep
from tokensel.experiments.sweep import main as sweep_main
from tokensel.selectors.base import Selector

LOADS: list[str] = []
CRASH = {"after": None, "calls": 0}


@register_model("tiny-counting-llava-sweep")
def _counting(model_cfg) -> LoadedModel:
    LOADS.append(model_cfg.name)
    return build_tiny_llava(model_cfg)


@tokensel.register_selector("test-crashing-sweep")
class CrashingSweep(Selector):
    """The first k tokens; raises once CRASH['after'] calls are exceeded."""

    def select(self, batch, k):
        CRASH["calls"] += 1
        if CRASH["after"] is not None and CRASH["calls"] > CRASH["after"]:
            raise RuntimeError("simulated crash")
        return Selection(indices=torch.arange(k).expand(batch.vision.shape[0], k).clone())


def write_sweep(tmp_path: Path, dataset: Path, grid: dict, wandb: str = "disabled") -> Path:
    spec = {
        "name": "resumable",
        "base": TINY,
        "overrides": [
            f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", "eval.progress=false",
            "logging.num_overlays=0", "model.name=tiny-counting-llava-sweep", f"logging.wandb_mode={wandb}",
            "dataset.limit=4",
        ],
        "grid": grid,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


GRID = {"selector.name": ["none", "mmtok", "divprune"], "budget.k": [4, 8], "selector.params.alpha": [0.5]}


def _folders(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "runs" / "resumable").iterdir() if p.is_dir() and p.name != "summary")


def test_second_run_skips_everything_and_rebuilds_the_summary(dataset, tmp_path, capsys):
    path = write_sweep(tmp_path, dataset, GRID, wandb="offline")
    LOADS.clear()
    first = run_sweep(*load_sweep(path))
    assert LOADS == ["tiny-counting-llava-sweep"] and len(first) == 5
    folders = _folders(tmp_path)
    assert len(folders) == 5
    # records: null where nothing applies
    none_row = next(r for r in first if r["selector"] == "none")
    assert none_row["k"] is None and "alpha" not in none_row
    for row in first:
        cfg = yaml.safe_load((Path(row["run_dir"]) / "config.yaml").read_text())  # the effective config
        expect_alpha = 0.5 if row["selector"] == "mmtok" else None
        assert cfg["selector"]["params"]["alpha"] == expect_alpha and cfg["budget"]["k"] == row["k"]
        assert offline_wandb_run(Path(row["run_dir"]))["run_id"]
        assert "accuracy_stderr" in row
    summary = tmp_path / "runs" / "resumable" / "summary.json"
    summary.unlink()
    capsys.readouterr()
    LOADS.clear()
    second = run_sweep(*load_sweep(path))
    captured = capsys.readouterr()
    out = captured.out
    assert LOADS == [] and out.count("skipped (finished)") == 5  # no model loaded, nothing ran
    assert "another tokensel" not in captured.err  # the same code made them
    assert _folders(tmp_path) == folders  # no "-1" folders
    assert [(r["selector"], r["k"], r["accuracy"]) for r in second] == [(r["selector"], r["k"], r["accuracy"]) for r in first]
    assert len(json.loads(summary.read_text())) == 5  # rebuilt
    LOADS.clear()
    assert sweep_main([str(path), "--force"]) == 0
    assert LOADS == ["tiny-counting-llava-sweep"] and _folders(tmp_path) == folders


def test_skipped_runs_of_another_tokensel_are_named(dataset, tmp_path, capsys):
    """A finished run whose record names another tokensel commit or version is reused (its
    run key is the configuration), and the sweep says so on stderr, pointing to --force."""
    path = write_sweep(tmp_path, dataset, {"selector.name": ["mmtok"], "budget.k": [4, 8]})
    rows = run_sweep(*load_sweep(path))
    metrics = Path(rows[0]["run_dir"]) / "metrics.json"
    doc = json.loads(metrics.read_text())
    doc["environment"]["tokensel_git_commit"] = "0" * 40
    metrics.write_text(json.dumps(doc))
    capsys.readouterr()
    run_sweep(*load_sweep(path))
    err = capsys.readouterr().err
    assert "1 of the 2 finished runs skipped were produced by another tokensel" in err and "--force" in err
    assert str(metrics.parent) in err


def test_shards_then_summarize(dataset, tmp_path, capsys):
    path = write_sweep(tmp_path, dataset, GRID)
    assert sweep_main([str(path), "--shard", "0/2"]) == 0
    assert len(_folders(tmp_path)) == 3  # points 0, 2, 4
    capsys.readouterr()
    assert sweep_main([str(path), "--summarize"]) == 0
    out = capsys.readouterr().out
    assert "3 finished runs" in out and "2 point(s) not finished yet" in out
    assert sweep_main([str(path), "--shard", "1/2"]) == 0
    capsys.readouterr()
    assert sweep_main([str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("finished") == 5
    assert sweep_main([str(path), "--summarize"]) == 0
    assert "5 finished runs" in capsys.readouterr().out
    rows = json.loads((tmp_path / "runs" / "resumable" / "summary.json").read_text())
    assert [(r["selector"], r["k"]) for r in rows] == [("none", None), ("mmtok", 4), ("mmtok", 8), ("divprune", 4), ("divprune", 8)]
    for bad in ("2/2", "x/2", "1/0"):
        assert sweep_main([str(path), "--shard", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--shard" in err[0]


def test_interrupted_point_resumes(dataset, tmp_path, capsys):
    path = write_sweep(tmp_path, dataset, {"selector.name": ["test-crashing-sweep"], "budget.k": [4]})
    CRASH.update(after=3, calls=0)  # the warm-up and two samples, then a crash
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sweep(*load_sweep(path), print_results=False)
    (folder,) = _folders(tmp_path)
    CRASH.update(after=None, calls=0)
    rows = run_sweep(*load_sweep(path))
    assert "resumed" in capsys.readouterr().out
    assert CRASH["calls"] == 1 + 2  # warm-up + the two samples not recorded
    assert _folders(tmp_path) == [folder] and len(rows) == 1
    records = (tmp_path / "runs" / "resumable" / folder / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in records] == ["q0", "q1", "q2", "q3"]
