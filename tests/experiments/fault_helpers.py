"""Helpers of the fault-injection tests: ``tokensel eval`` / ``tokensel sweep`` as real
subprocesses (killed at chosen moments), and what a finished run folder holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from exp_helpers import REPO, TINY

import tokensel
from tokensel.batch import Selection
from tokensel.selectors.base import Selector

#: Record fields that depend on the inputs alone (not on timing): what a resumed run must
#: reproduce exactly.
STABLE = ("id", "input_fp", "question", "answer", "prediction", "correct", "kept_tokens", "image_tokens")


def cli_env(**extra: str) -> dict:
    """The environment of a ``tokensel`` subprocess: this checkout, one thread, no W&B account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def eval_args(dataset: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "tokensel.experiments.cli", "eval", TINY, f"dataset.path={dataset}",
            f"logging.output_dir={out}", "eval.progress=false", "logging.num_overlays=0", *more]


def start(args: list[str], env: Optional[dict] = None, cwd: Optional[Path] = None) -> subprocess.Popen:
    return subprocess.Popen(args, env=env or cli_env(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def run(args: list[str], env: Optional[dict] = None, timeout: float = 300, cwd: Optional[Path] = None):
    return subprocess.run(args, env=env or cli_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def wait_until(cond: Callable[[], bool], proc: subprocess.Popen, timeout: float = 240, poll: float = 0.005) -> bool:
    """Poll ``cond`` until it holds (True) or ``proc`` ended (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError("the subprocess neither reached the awaited state nor ended")


def count_lines(folder: Path) -> int:
    """Complete lines of every partial results file under ``folder`` (recursively)."""
    return sum(p.read_bytes().count(b"\n") for p in folder.rglob("results.partial*.jsonl"))


def run_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []


def stable(records: list[dict]) -> list[dict]:
    return [{k: r.get(k) for k in STABLE} for r in records]


def results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


CALLS = {"n": 0}


@tokensel.register_selector("test-counting-fault")
class CountingFault(Selector):
    """The first k tokens; counts its calls (one per sample at batch size 1, plus the warm-up)."""

    def select(self, batch, k):
        CALLS["n"] += 1
        return Selection(indices=torch.arange(k).expand(batch.vision.shape[0], k).clone())


def _records(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]


def _recomputed(before: list[dict], after: list[dict]) -> list[str]:
    """Ids whose record was computed again (a new measured prefill time)."""
    old = {r["id"]: r["prefill_ms"] for r in before}
    return [r["id"] for r in after if old.get(r["id"]) != r["prefill_ms"]]
