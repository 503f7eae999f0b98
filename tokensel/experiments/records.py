"""What a run records about itself: the effective configuration, its key and the environment.

The *effective* configuration is the config as it acted, not as it was written: an unpruned run
(``selector.name: none`` or ``budget.k: null``) records ``selector.name: none``, ``budget.k: null``
and every selector parameter as ``null``; a selector records the parameters it received (after a
sweep's lenient filtering, with ``eval.seed`` for selectors that take a seed, and the model
family's defaults, e.g. ``tau_tv`` for MMTok on LLaVA) and ``null`` for the configured ones it
does not take. It is itself a valid config: ``tokensel eval RUN/config.yaml`` repeats the run.

The run key (a hash of the effective configuration without the logging group and the settings
that do not change results, and of the content of the samples: their inputs and answers, the
image bytes) identifies a sweep point across reruns; a changed dataset is a new run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from tokensel.experiments.config import NO_SELECTOR, effective_selector_params

__all__ = ["is_unpruned", "effective_config", "run_key", "config_key", "environment", "flat_effective_config"]

#: Config entries that do not change what a run computes (left out of the run key).
_NOT_IN_KEY = {
    "logging": None,
    "eval": ("progress", "check_images", "dist_backend"),
    "dataset": ("name",),
    "selector": ("strict_params",),
}


def is_unpruned(cfg: DictConfig) -> bool:
    """True when the config evaluates the model with every vision token."""
    from tokensel.experiments.config import budget_args

    return cfg.selector.name in NO_SELECTOR or budget_args(cfg) == (None, None)


def effective_config(cfg: DictConfig, received: Optional[dict] = None) -> dict:
    """The effective configuration as a nested dict (see the module docstring).

    ``received``: the keyword arguments the selector was built with when known (after the
    model is loaded: with the model family's defaults); default: those the config gives it."""
    data = OmegaConf.to_container(cfg, resolve=True)
    configured = dict(data["selector"].get("params") or {})
    if is_unpruned(cfg):
        data["selector"]["name"] = "none"
        data["budget"]["k"] = None
        data["budget"]["ratio"] = data["budget"]["adaptive"] = None
        data["selector"]["params"] = {key: None for key in configured}
        return data
    got = effective_selector_params(cfg, with_seed=True) if received is None else dict(received)
    params = {key: None for key in configured}
    params.update(got)
    data["selector"]["params"] = params
    return data


def _without_ignored(data: dict) -> dict:
    out = json.loads(json.dumps(data, default=str))
    for group, keys in _NOT_IN_KEY.items():
        if keys is None:
            out.pop(group, None)
        else:
            for key in keys:
                out.get(group, {}).pop(key, None)
    params = out.get("selector", {}).get("params") or {}
    out["selector"]["params"] = {k: v for k, v in params.items() if v is not None}
    return out


def config_key(cfg: DictConfig) -> str:
    """A stable hash (16 hex digits) of the effective configuration alone."""
    blob = json.dumps(_without_ignored(effective_config(cfg)), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_key(cfg: DictConfig, data_fp: str) -> str:
    """A stable hash (16 hex digits) of the effective configuration and the content of its
    samples (``data_fp``: :func:`tokensel.experiments.fingerprint.data_fingerprint`), for skip
    and resume: a run is reused only for the same config on the same data."""
    return hashlib.sha256(f"{config_key(cfg)}:{data_fp}".encode()).hexdigest()[:16]


def flat_effective_config(effective: dict) -> dict:
    """``{"selector": {"params": {"alpha": None}}}`` -> ``{"selector.params.alpha": None}``."""
    from tokensel.experiments.config import to_flat_dict

    return to_flat_dict(effective)


def _git_commit(folder: Path) -> Optional[dict]:
    """The checkout's commit (and whether the work tree has changes) when ``folder`` is in one."""
    try:
        top = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if top.returncode != 0:
        return None
    root, commit = top.stdout.split()[:2]
    if not (Path(root) / "pyproject.toml").is_file():  # some other repository around site-packages
        return None
    try:
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return {"commit": commit, "dirty": bool(dirty)}


def environment(seed: Optional[int] = None) -> dict:
    """Versions and settings that reproduce a run: tokensel (version; git commit when imported
    from a checkout), torch, transformers, Python, platform, torch's thread count and the seed."""
    import torch
    import transformers

    import tokensel

    ts_version = getattr(tokensel, "__version__", None)
    git = _git_commit(Path(tokensel.__file__).resolve().parent)
    return {
        "tokensel_version": ts_version,
        "tokensel_path": str(Path(tokensel.__file__).resolve().parent),
        "tokensel_git_commit": git["commit"] if git else None,
        "tokensel_git_dirty": git["dirty"] if git else None,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "torch_num_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda_available": torch.cuda.is_available(),
        "seed": seed,
        "argv": list(sys.argv),
    }
