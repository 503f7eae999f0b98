"""Two processes at once on one output folder: two ``tokensel sweep`` share the points (each
evaluated and logged to W&B once: real offline runs, counted), a ``--force`` sweep never empties
a folder another process is writing, two ``tokensel eval`` pick different folders."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from exp_helpers import TINY, make_dataset
from fault_helpers import cli_env, results, run_folders, start, wait_until

from tokensel.experiments.locking import RunLock, make_new_dir
from tokensel.experiments.sweep import expand_points, load_sweep

GRID = {"selector.name": ["divprune", "mmtok"], "budget.k": [2, 4, 8]}


def _sweep_file(tmp_path: Path, dataset: Path, wandb: str = "offline") -> Path:
    spec = {"name": "shared", "base": TINY, "grid": GRID,
            "overrides": [f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", "eval.progress=false",
                          "logging.num_overlays=0", f"logging.wandb_mode={wandb}", "dataset.limit=6"]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _sweep(path: Path, *more: str):
    return start([sys.executable, "-m", "tokensel.experiments.cli", "sweep", str(path), *more])


def _finish(proc) -> tuple[str, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out, err


def _statuses(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.split() and line.split()[0] in
            ("ran", "skipped", "resumed", "finished", "redone")]


def _point_folders(tmp_path: Path) -> list[Path]:
    return [p for p in run_folders(tmp_path / "runs" / "shared") if p.name != "summary"]


def _check_every_point_once(tmp_path: Path, path: Path) -> None:
    """One run folder per point, finished and whole, with exactly one W&B run."""
    keys = sorted(point.key for point, _ in expand_points(*load_sweep(path)))
    folders = _point_folders(tmp_path)
    assert sorted(json.loads((f / "run.json").read_text())["key"] for f in folders) == keys
    for folder in folders:
        assert [r["id"] for r in results(folder)] == [f"q{i}" for i in range(6)]
        assert len(list((folder / "wandb").glob("offline-run-*"))) == 1, folder
        assert not list(folder.glob("results.partial*"))


def test_two_sweeps_on_one_folder_evaluate_and_log_each_point_once(tmp_path):
    dataset = make_dataset(tmp_path / "ds", n=6)
    path = _sweep_file(tmp_path, dataset)
    first = _sweep(path)
    assert wait_until(lambda: any((tmp_path / "runs").rglob("run.json")), first)  # first is at its first point
    second = _sweep(path)
    (out1, _), (out2, _) = _finish(first), _finish(second)
    ran = [s for s in _statuses(out1) + _statuses(out2) if s.startswith(("ran", "resumed"))]
    assert len(ran) == len(GRID["budget.k"]) * 2  # every point ran in exactly one of the two
    assert any(s.startswith(("skipped", "finished by another")) for s in _statuses(out2))
    _check_every_point_once(tmp_path, path)


@pytest.mark.slow
def test_a_forced_sweep_waits_for_the_point_another_process_runs(tmp_path):
    """A sweep holds a point (here: the test holds its lock, as a running sweep does); a
    ``--force`` sweep on the same folder reruns the others, comes back to the held point, waits
    for it and reuses it: the held folder is never emptied under its writer."""
    dataset = make_dataset(tmp_path / "ds", n=6)
    path = _sweep_file(tmp_path, dataset, wandb="disabled")
    points = expand_points(*load_sweep(path))
    parent = tmp_path / "runs" / "shared"
    held = RunLock(parent, points[0][0].key).acquire(wait=False)
    log = tmp_path / "stderr.txt"
    try:
        with open(log, "w") as err_file:
            proc = subprocess.Popen([sys.executable, "-m", "tokensel.experiments.cli", "sweep", str(path), "--force"],
                                    env=cli_env(), stdout=subprocess.PIPE, stderr=err_file, text=True)
        assert wait_until(lambda: "waiting for" in log.read_text(), proc, timeout=400)
        # the other points are finished, the held one not started: its writer is undisturbed
        assert len(_point_folders(tmp_path)) == len(points) - 1
        assert all((f / "metrics.json").exists() for f in _point_folders(tmp_path))
    finally:
        held.release()
    out, _ = proc.communicate(timeout=600)
    err = log.read_text()
    assert proc.returncode == 0, err
    assert f"is running the point {points[0][0].key}" in err
    assert len(_point_folders(tmp_path)) == len(points)
    assert [line.split()[0] for line in _statuses(out)] == ["ran"] * len(points)


def _take(args: tuple) -> str:
    parent, barrier = args
    barrier.wait()
    return make_new_dir(Path(parent), "run").name


def test_new_folders_are_taken_exclusively_by_concurrent_processes(tmp_path):
    """Eight processes asking for a new folder at the same moment get eight folders."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(8)
        with ctx.Pool(8) as pool:
            names = pool.map(_take, [(str(tmp_path), barrier)] * 8)
    assert sorted(names) == sorted(["run"] + [f"run-{i}" for i in range(1, 8)])


@pytest.mark.slow
def test_two_simultaneous_evals_write_two_folders(tmp_path):
    dataset = make_dataset(tmp_path / "ds", n=4)
    out = tmp_path / "runs"
    args = [sys.executable, "-m", "tokensel.experiments.cli", "eval", TINY, f"dataset.path={dataset}",
            f"logging.output_dir={out}", "eval.progress=false", "logging.num_overlays=0", "logging.wandb_mode=disabled"]
    procs = [start(args, env=cli_env()) for _ in range(2)]
    for proc in procs:
        _finish(proc)
    folders = run_folders(out)
    assert [f.name for f in folders] == ["data-full", "data-full-1"]
    for folder in folders:
        assert [r["id"] for r in results(folder)] == ["q0", "q1", "q2", "q3"]
