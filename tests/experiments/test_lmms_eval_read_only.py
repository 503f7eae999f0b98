"""The lmms-eval model writes no run folder, so it starts in a read-only working directory
(it used to validate tokensel's output folder there and refuse). Run with lmms-eval's own
environment (``TOKENSEL_LMMS_PYTHON``, as the harness tests) in a really read-only folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from exp_helpers import REPO

SCRIPT = """
from tokensel.experiments.lmms_eval_model import TokenselLlava
model = TokenselLlava(pretrained="shapes-llava", selector="mmtok", k=8)
print("started", model.cfg.selector.name, model.cfg.budget.k)
"""


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write to: mode 0555 and, for root (who ignores modes), a read-only
    bind mount of it."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    mounted = False
    if _writable(folder):
        done = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
        if done.returncode == 0:
            mounted = True
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True)
    try:
        assert not _writable(folder), "could not make a read-only folder here (root without mount rights)"
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)
        folder.chmod(0o755)


def test_the_lmms_eval_model_starts_in_a_read_only_working_directory(read_only_dir):
    python = os.environ.get("TOKENSEL_LMMS_PYTHON") or sys.executable
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([python, "-c", SCRIPT], cwd=read_only_dir, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "started mmtok 8" in done.stdout
    assert list(read_only_dir.iterdir()) == []
