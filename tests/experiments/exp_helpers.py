"""Helpers for the experiment tests: a small JSONL dataset of generated images, paths."""

from __future__ import annotations

import json
import random
from pathlib import Path

COLORS = {"red": (215, 35, 35), "green": (30, 160, 60), "blue": (35, 75, 215), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square")


def make_dataset(root: Path, n: int = 8, seed: int = 0) -> Path:
    """``n`` yes/no existence questions about 56 px images with one coloured shape each."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        im = Image.new("RGB", (56, 56), (235, 235, 235))
        d = ImageDraw.Draw(im)
        box = [rng.randint(2, 20), rng.randint(2, 20)]
        box += [box[0] + 30, box[1] + 30]
        (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLORS[color])
        im.save(root / "images" / f"{i}.png")
        asked = color if i % 2 == 0 else rng.choice([c for c in COLORS if c != color])
        lines.append(
            {
                "id": f"q{i}",
                "image": f"images/{i}.png",
                "question": f"is there a {asked} {shape}?",
                "answer": "yes" if asked == color else "no",
                "category": "existence" if i % 4 < 2 else "color",
            }
        )
    path = root / "data.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "tokensel" / "experiments" / "configs" / "tiny.yaml")


def installed_copy(tmp_path: Path) -> dict:
    """An environment with the package alone (no repository around it: no experiments/ folder,
    no git checkout) on PYTHONPATH and a ``tokensel`` command on PATH, as an installation
    gives them. Returns the environment for subprocesses."""
    import os
    import shutil
    import sys

    site = tmp_path / "site"
    shutil.copytree(REPO / "tokensel", site / "tokensel", ignore=shutil.ignore_patterns("__pycache__"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "tokensel"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m tokensel.experiments.cli \"$@\"\n")
    script.chmod(0o755)
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(site), PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")


def offline_wandb_run(run_dir: Path) -> dict:
    """The one offline W&B run under ``run_dir``, through what W&B documents it writes offline
    (its transaction log itself is W&B's private format, read by ``wandb sync`` alone):
    ``{"dir", "run_id"}`` from ``wandb/offline-run-<time>-<id>/run-<id>.wandb``, ``"tables"``:
    ``{key: {"columns", "data"}}`` from ``files/media/table/<key>_<step>_<hash>.table.json``,
    ``"images"``: ``{key: number of files}`` from ``files/media/images/<key>_<step>_<hash>.png``."""
    from tokensel.experiments.tracking import find_offline_runs

    (folder,) = find_offline_runs(run_dir)
    (log,) = folder.glob("run-*.wandb")
    media = folder / "files" / "media"
    tables = {p.name.rsplit("_", 2)[0]: json.loads(p.read_text()) for p in media.glob("table/*.table.json")}
    images: dict = {}
    for p in media.glob("images/*.png"):
        key = p.name.rsplit("_", 2)[0]
        images[key] = images.get(key, 0) + 1
    return {"dir": folder, "run_id": log.stem[len("run-"):], "tables": tables, "images": images}


def wandb_sync_dry_run(cwd: Path) -> str:
    """The output of ``wandb sync --dry-run`` (lists the offline runs it would upload; no network)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run"], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr
