"""One evaluation end to end on the tiny test model: its run directory, what it hands to W&B,
and the real offline W&B run (its documented files: media, ``wandb sync``)."""

from __future__ import annotations

import json
import os

import pytest
from exp_helpers import TINY, offline_wandb_run, wandb_sync_dry_run

from tokensel.experiments.records import flat_effective_config
from tokensel.experiments.runner import prepare, run_eval, wandb_config, wandb_metrics
from tokensel.experiments.tracking import resolve_wandb_mode


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

    # what goes to W&B: the effective config, flattened, and the metrics of metrics.json
    config = wandb_config(result)
    assert config["selector.name"] == selector and config["budget.k"] == k and config["dataset.path"] == str(dataset)
    assert {key: config[key] for key in flat_effective_config(doc["config"])} == flat_effective_config(doc["config"])
    logged = wandb_metrics(m)
    assert _flat({key: logged[key] for key in m}) == pytest.approx(_flat(written))
    assert logged["accuracy_ci_low"] == m["accuracy_ci"][0] and logged["accuracy_ci_high"] == m["accuracy_ci"][1]

    # the real offline W&B run: the results table and the overlays as W&B wrote them, and
    # `wandb sync` finds the run to upload
    run = offline_wandb_run(run_dir)
    assert run["dir"] == result.wandb_dir
    table = run["tables"]["results"]
    assert len(table["data"]) == 8
    assert [row[table["columns"].index("prediction")] for row in table["data"]] == [r["prediction"] for r in lines]
    assert run["images"].get("selection_overlays", 0) == (2 if k is not None else 0)
    assert run["run_id"] in wandb_sync_dry_run(run_dir)


def test_cli_entry_points(dataset, tmp_path):
    from tokensel.experiments.cli import main as cli_main

    out = tmp_path / "cli"
    args = [TINY, f"dataset.path={dataset}", f"logging.output_dir={out}", "logging.wandb_mode=disabled",
            "dataset.limit=3", "logging.run_name=x"]
    assert cli_main(["eval", *args]) == 0
    assert json.loads((out / "x" / "metrics.json").read_text())["num_samples"] == 3
    assert not list(out.rglob("offline-run-*")) and not list(out.rglob("*.wandb"))  # disabled: no W&B files


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
