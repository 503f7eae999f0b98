"""``torchrun --nproc_per_node=2 -m tokensel.experiments.evaluate`` (what an installed package
offers, run from outside the repository) equals the single-process run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from exp_helpers import TINY, installed_copy, make_dataset, offline_wandb_run

from tokensel.experiments.runner import prepare, run_eval

TIMING = ("prefill_ms", "selection_ms", "generate_ms", "wall_s_rank0")


def test_torchrun_two_processes_equal_one(tmp_path):
    dataset = make_dataset(tmp_path / "ds", n=7)  # odd: ranks get 4 and 3 samples
    common = [f"dataset.path={dataset}", "selector.name=mmtok", "budget.k=8", "eval.progress=false"]

    one = [f"logging.output_dir={tmp_path / 'one'}", "logging.wandb_mode=disabled"]
    single = run_eval(prepare(TINY, common + one), print_results=False)

    env = installed_copy(tmp_path)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "tokensel.experiments.evaluate", TINY, *common,
        f"logging.output_dir={tmp_path / 'two'}", "logging.run_name=dist",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run_dir = tmp_path / "two" / "dist"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    records = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert metrics["num_samples"] == 7
    for key, value in single.metrics.items():
        if key not in TIMING and not key.endswith(("_ms", "_mb")):  # per-process timings and memory
            assert metrics[key] == pytest.approx(value), key
    assert [(r["id"], r["prediction"], r["kept_tokens"], r["correct"]) for r in records] == [
        (r["id"], r["prediction"], r["kept_tokens"], r["correct"]) for r in single.records
    ]
    assert len({r["prediction"] for r in records}) > 1  # the comparison is not trivially constant
    assert f"{metrics['accuracy']:.4f}" in proc.stdout  # rank 0 printed the table
    # only rank 0 logged, once, with the gathered metrics
    run = offline_wandb_run(tmp_path / "two")  # exactly one offline W&B run
    table = run["tables"]["results"]  # holding the gathered records
    assert [row[table["columns"].index("id")] for row in table["data"]] == [r["id"] for r in records]
