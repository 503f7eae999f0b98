"""One evaluation end to end on the tiny test model, read back from its offline W&B run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from exp_helpers import TINY

from tokensel.experiments.runner import prepare, run_eval
from tokensel.experiments.tracking import find_offline_runs, read_offline_run, resolve_wandb_mode


def _flat(metrics: dict) -> dict:
    """The metrics with each list value (a confidence interval) spread over keys ``name[i]``."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (list, tuple)):
            out.update({f"{key}[{i}]": v for i, v in enumerate(value)})
        else:
            out[key] = value
    return out


def test_auto_mode_goes_offline_without_key(monkeypatch, tmp_path):
    assert "WANDB_MODE" not in os.environ
    assert resolve_wandb_mode("auto") == "offline" and os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"  # a mode the user set is kept
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online" and "WANDB_MODE" not in os.environ
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    os.chmod(tmp_path / "netrc", 0o600)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_wandb_mode("auto") == "online"


@pytest.mark.parametrize("selector, k", [("mmtok", 4), ("none", None)])
def test_eval_logs_what_it_returns(dataset, tmp_path, capsys, selector, k):
    out = tmp_path / "runs"
    overrides = [
        f"dataset.path={dataset}", f"selector.name={selector}", f"budget.k={'null' if k is None else k}",
        f"logging.output_dir={out}", "logging.num_overlays=2", "eval.max_new_tokens=2",
    ]
    prepared = prepare(TINY, overrides)
    result = run_eval(prepared)
    printed = capsys.readouterr().out
    m = result.metrics
    assert m["num_samples"] == 8 and 0.0 <= m["accuracy"] <= 1.0
    assert m["mean_image_tokens"] == 16
    assert m["mean_kept_tokens"] == (16 if k is None else k)
    assert m["prefill_ms"] > 0 and ((m.get("selection_ms") or 0) > 0) == (k is not None)
    assert {"pope_f1", "pope_precision", "pope_recall", "pope_yes_ratio", "mme_score"} <= set(m)
    assert f"{m['accuracy']:.4f}" in printed and "pope_f1" in printed

    # the run directory: resolved config, per-sample results, metrics
    run_dir = result.run_dir
    saved = (run_dir / "config.yaml").read_text()
    assert f"name: {selector}" in saved and str(dataset) in saved
    lines = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [f"q{i}" for i in range(8)]
    assert sum(r["correct"] for r in lines) / 8 == pytest.approx(m["accuracy"])
    doc = json.loads((run_dir / "metrics.json").read_text())
    written = {k: v for k, v in doc.items() if k not in ("config", "environment")}
    assert _flat(written) == pytest.approx(_flat(m))  # intervals ([low, high]) compared entry by entry

    # the offline W&B run holds the same config and metrics
    (wandb_dir,) = find_offline_runs(run_dir)
    assert wandb_dir == result.wandb_dir
    run = read_offline_run(wandb_dir)
    assert run["config"]["selector.name"] == selector and run["config"]["budget.k"] == k
    assert run["config"]["dataset.path"] == str(dataset)
    for key, value in m.items():
        assert run["summary"][key] == pytest.approx(value), key
    table = run["summary"]["results"]
    assert table["_type"] == "table-file" and table["nrows"] == 8
    rows = json.loads((wandb_dir / "files" / table["path"]).read_text())
    assert [r[rows["columns"].index("prediction")] for r in rows["data"]] == [r["prediction"] for r in lines]
    has_overlays = any(k_.startswith("selection_overlays") for k_ in run["summary"])
    assert has_overlays == (k is not None)
    if k is not None:  # `wandb sync` finds the offline run to upload (dry run: no network)
        proc = subprocess.run(
            [sys.executable, "-m", "wandb", "sync", "--dry-run"], cwd=run_dir, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and run["run_id"] in proc.stdout + proc.stderr


def test_cli_entry_points(dataset, tmp_path):
    from tokensel.experiments.cli import main as cli_main

    out = tmp_path / "cli"
    args = [TINY, f"dataset.path={dataset}", f"logging.output_dir={out}", "logging.wandb_mode=disabled",
            "dataset.limit=3", "logging.run_name=x"]
    assert cli_main(["eval", *args]) == 0
    assert json.loads((out / "x" / "metrics.json").read_text())["num_samples"] == 3
    assert not list(out.rglob("*.wandb"))  # disabled means no W&B files


@pytest.mark.parametrize("scoring", ["generate", "choice"])
def test_batched_eval_equals_one_by_one(tmp_path, scoring):
    from exp_helpers import make_dataset

    data = make_dataset(tmp_path / "ds7", n=7)  # batches of 3, 3, 1
    common = [f"dataset.path={data}", "selector.name=mmtok", "budget.k=8", "logging.wandb_mode=disabled",
              f"logging.output_dir={tmp_path / 'runs'}", "eval.progress=false", f"eval.scoring={scoring}", "eval.max_new_tokens=3"]
    one = run_eval(prepare(TINY, common), print_results=False)
    three = run_eval(prepare(TINY, common + ["eval.batch_size=3"]), print_results=False)
    keys = ("id", "prediction", "kept_tokens", "image_tokens", "correct")
    assert [tuple(r[k] for k in keys) for r in three.records] == [tuple(r[k] for k in keys) for r in one.records]
    assert three.metrics["accuracy"] == one.metrics["accuracy"] and three.metrics["selection_ms"] > 0
    if scoring == "generate":
        assert len({r["prediction"] for r in one.records}) > 1
