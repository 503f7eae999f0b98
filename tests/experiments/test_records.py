"""Runs record what ran: the effective configuration (null where nothing applies) and the
environment, alike in config.yaml, metrics.json and the W&B config."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from exp_helpers import REPO, TINY, offline_wandb_run

import tokensel
from tokensel.experiments.runner import prepare, run_eval, wandb_config


def _run(dataset: Path, out: Path, *extra: str):
    args = [
        f"dataset.path={dataset}", f"logging.output_dir={out}", "eval.progress=false", "dataset.limit=3",
        "selector.strict_params=false", "selector.params.alpha=0.5", "budget.k=4", "logging.num_overlays=0", *extra,
    ]
    return run_eval(prepare(TINY, args), print_results=False)


@pytest.mark.parametrize(
    "selector, k, params",
    [
        ("none", None, {"alpha": None}),  # the unpruned run has no k and no alpha
        ("divprune", 4, {"alpha": None}),  # DivPrune takes no alpha
        ("mmtok", 4, {"alpha": 0.5, "tau_tv": 0.02}),  # tau_tv: the LLaVA family default it received
    ],
)
def test_effective_config_everywhere(dataset, tmp_path, selector, k, params):
    result = _run(dataset, tmp_path / "runs", f"selector.name={selector}")
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["selector"]["name"] == selector and saved["budget"]["k"] == k
    assert saved["selector"]["params"] == params
    doc = json.loads((result.run_dir / "metrics.json").read_text())
    assert doc["config"] == saved
    logged = wandb_config(result)  # the W&B run's config
    assert logged["selector.name"] == selector and logged["budget.k"] == k
    for key, value in params.items():
        assert logged[f"selector.params.{key}"] == value, key
    assert offline_wandb_run(result.run_dir)["run_id"]  # a real offline W&B run was written
    # the effective config is a valid config that repeats the run
    again = run_eval(prepare(result.run_dir / "config.yaml", [f"logging.output_dir={tmp_path / 'again'}",
                                                              "logging.wandb_mode=disabled"]), print_results=False)
    assert [r["prediction"] for r in again.records] == [r["prediction"] for r in result.records]


def test_environment_is_recorded(dataset, tmp_path):
    result = _run(dataset, tmp_path / "runs", "selector.name=mmtok", "eval.seed=3")
    env = json.loads((result.run_dir / "metrics.json").read_text())["environment"]
    assert env["tokensel_version"] == tokensel.__version__
    assert env["torch_version"] == torch.__version__ and env["transformers_version"] == transformers.__version__
    assert env["torch_num_threads"] == torch.get_num_threads() and env["seed"] == 3
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert env["tokensel_git_commit"] == head  # imported from this checkout
    assert isinstance(env["tokensel_git_dirty"], bool)
    logged = wandb_config(result)
    assert logged["env.tokensel_git_commit"] == head and logged["env.torch_version"] == torch.__version__
    assert logged["env.seed"] == 3 and logged["eval.seed"] == 3
