"""Shared fixtures: a small JSONL dataset of generated images, and W&B kept offline."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

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


REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")
