"""Shared fixtures: a small JSONL dataset of generated images, and W&B kept offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from exp_helpers import make_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds")


@pytest.fixture(autouse=True)
def wandb_offline_env(tmp_path: Path, monkeypatch):
    """No W&B credentials and no preset mode, so ``wandb_mode: auto`` must choose offline;
    W&B's own config / cache / staging folders go to tmp."""
    saved = os.environ.get("WANDB_MODE")
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    if saved is None:
        os.environ.pop("WANDB_MODE", None)
    else:
        os.environ["WANDB_MODE"] = saved
