"""Synthetic "shapes" VQA: seeded PIL scenes with POPE-style existence, colour and counting questions.

Every image is 336 x 336 (LLaVA-1.5 resolution, 24 x 24 patches of 14 px) with a handful of
small coloured shapes on a noisy light background plus grey clutter (distractors that are never
asked about). Each scene yields several questions:

* ``existence`` -- "Is there a red triangle in the image?"; exactly one "yes" and one "no" per
  scene. Every scene is assigned one POPE negative-sampling mode (cycling over the scene index):

  - ``random``: the negative is a uniformly random absent (colour, shape) pair;
  - ``popular``: the negative is among the most frequent absent pairs under the generator's
    global (non-uniform) pair prior :data:`PAIR_PRIOR`;
  - ``adversarial``: the negative reuses a colour *or* a shape present in the image, in a
    combination that is absent (e.g. a red circle and a blue triangle are present and the
    question asks for a red triangle).

* ``color`` -- "What color is the square?" (only for a shape present exactly once).
* ``count`` -- "How many triangles are there?" / "How many red shapes are there?"; the scene is
  planned so that the count answer is uniform over 0..MAX_COUNT.

Splits come from disjoint seed ranges (see :data:`SPLIT_OFFSETS`). Records are plain
dataclasses; :func:`write_jsonl` writes a split as ``data.jsonl`` + ``images/*.png``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "IMAGE_SIZE",
    "PATCH_SIZE",
    "COLORS",
    "SHAPES",
    "SIZES",
    "MAX_COUNT",
    "POPE_MODES",
    "CATEGORIES",
    "PAIR_PRIOR",
    "SPLIT_OFFSETS",
    "ShapeObject",
    "Scene",
    "VQARecord",
    "answer_vocabulary",
    "question_vocabulary",
    "render_scene",
    "sample_scene",
    "make_questions",
    "count_question",
    "generate_split",
    "iter_split",
    "scene_seed",
    "write_jsonl",
    "read_jsonl",
    "patch_labels",
]

IMAGE_SIZE = 336
PATCH_SIZE = 14
GRID = IMAGE_SIZE // PATCH_SIZE  # 24

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 160, 60),
    "blue": (35, 75, 215),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 175),
    "orange": (245, 125, 15),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}
# Object radius (half of the bounding box side) in pixels for each size class.
SIZES: dict[str, tuple[int, int]] = {"small": (14, 17), "large": (21, 25)}
MAX_COUNT = 4
POPE_MODES: tuple[str, ...] = ("random", "popular", "adversarial")
CATEGORIES: tuple[str, ...] = ("existence", "color", "count")
DIGITS = tuple(str(i) for i in range(MAX_COUNT + 1))

SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 10_000_000, "test": 20_000_000}
_SPLIT_STRIDE = 1_000_000_000  # different ``seed`` arguments shift every split by this much

_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)


def _pair_prior() -> dict[tuple[str, str], float]:
    """A fixed Zipf-like prior over (colour, shape) pairs; defines "popular" objects."""
    order = random.Random(12345).sample(list(_PAIRS), len(_PAIRS))
    weights = [1.0 / (rank + 1) ** 0.7 for rank in range(len(order))]
    total = sum(weights)
    return {pair: w / total for pair, w in zip(order, weights)}


PAIR_PRIOR: dict[tuple[str, str], float] = _pair_prior()
_POPULAR_TOP = 3  # popular negatives are drawn from the 3 most frequent absent pairs

QUESTION_TEMPLATES = {
    "existence": "Is there a {color} {shape} in the image?",  # "an" before vowels, see _existence
    "color": "What color is the {shape}?",
    "count_shape": "How many {plural} are there?",
    "count_color": "How many {color} shapes are there?",
}


@dataclass(frozen=True)
class ShapeObject:
    """One coloured shape: centre (cx, cy) and radius r in pixels."""

    shape: str
    color: str
    size: str
    cx: int
    cy: int
    r: int


@dataclass
class Scene:
    """A sampled scene; ``image`` is rendered on demand by :func:`render_scene`."""

    image_id: str
    seed: int
    objects: list[ShapeObject]
    distractors: list[tuple[int, int, int, int, int]]  # (x0, y0, x1, y1, grey)
    count_target: tuple[str, str]  # ("shape", "triangle") or ("color", "red")
    count: int
    pope_mode: str
    _image: Image.Image | None = field(default=None, repr=False, compare=False)
    _ids: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            self._image, self._ids = render_scene(self)
        return self._image

    @property
    def id_map(self) -> np.ndarray:
        """[336, 336] uint8 map: 0 background, i + 1 where object i was drawn."""
        if self._ids is None:
            self._image, self._ids = render_scene(self)
        return self._ids

    def pairs(self) -> set[tuple[str, str]]:
        return {(o.color, o.shape) for o in self.objects}


@dataclass
class VQARecord:
    """One question about one image."""

    image: Image.Image | None
    question: str
    answer: str
    category: str
    pope_mode: str | None
    image_id: str
    question_id: str
    scene: Scene | None = field(default=None, repr=False, compare=False)

    def to_json(self, image_path: str) -> dict:
        return {
            "id": self.question_id,
            "question_id": self.question_id,
            "image_id": self.image_id,
            "image": image_path,
            "question": self.question,
            "answer": self.answer,
            "category": self.category,
            "pope_mode": self.pope_mode,
        }


def answer_vocabulary(category: str | None = None) -> tuple[str, ...]:
    """The candidate answer words of a category (all answers if ``category`` is None)."""
    by_cat = {"existence": ("yes", "no"), "color": tuple(COLORS), "count": DIGITS}
    if category is None:
        return by_cat["existence"] + by_cat["color"] + by_cat["count"]
    return by_cat[category]


def question_vocabulary() -> list[str]:
    """Every lower-cased word the question templates and answers can produce."""
    words: list[str] = []
    words += ["an"]
    for t in QUESTION_TEMPLATES.values():
        for c in COLORS:
            for s in SHAPES:
                text = t.format(color=c, shape=s, plural=PLURALS[s])
                words += text.lower().replace("?", " ?").split()
    words += list(answer_vocabulary())
    return list(dict.fromkeys(words))


def scene_seed(split: str, index: int, seed: int = 0) -> int:
    """The integer seed of scene ``index`` of ``split``; split ranges are disjoint."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_OFFSETS)}")
    if not 0 <= index < 10_000_000:
        raise ValueError("index must be in [0, 10_000_000)")
    return seed * _SPLIT_STRIDE + SPLIT_OFFSETS[split] + index


def _weighted_choice(rng: random.Random, pairs: Sequence[tuple[str, str]]) -> tuple[str, str]:
    return rng.choices(list(pairs), weights=[PAIR_PRIOR[p] for p in pairs], k=1)[0]


def _place(rng: random.Random, radii: list[int], taken: list[tuple[int, int, int]]) -> list[tuple[int, int]] | None:
    """Non-overlapping centres for objects of the given radii (None if it fails)."""
    out = []
    margin = 4
    for r in radii:
        for _ in range(200):
            cx = rng.randint(r + margin, IMAGE_SIZE - r - margin)
            cy = rng.randint(r + margin, IMAGE_SIZE - r - margin)
            if all(math.hypot(cx - x, cy - y) > r + rr + 10 for x, y, rr in taken):
                taken.append((cx, cy, r))
                out.append((cx, cy))
                break
        else:
            return None
    return out


def sample_scene(seed: int, index: int = 0, image_id: str | None = None) -> Scene:
    """Sample the layout of one scene from ``seed`` (deterministic)."""
    rng = random.Random(seed)
    # Plan the counting question first so its answer is uniform over 0..MAX_COUNT.
    count = rng.randint(0, MAX_COUNT)
    if rng.random() < 0.5:
        target = ("shape", rng.choice(SHAPES))
        match = [p for p in _PAIRS if p[1] == target[1]]
    else:
        target = ("color", rng.choice(list(COLORS)))
        match = [p for p in _PAIRS if p[0] == target[1]]
    rest = [p for p in _PAIRS if p not in match]
    n_other = rng.randint(1 if count > 0 else 2, 6 - max(count, 1) // 2 - (count >= 3))
    pairs = [_weighted_choice(rng, match) for _ in range(count)]
    pairs += [_weighted_choice(rng, rest) for _ in range(n_other)]
    rng.shuffle(pairs)
    sizes = [rng.choice(list(SIZES)) for _ in pairs]
    radii = [rng.randint(*SIZES[s]) for s in sizes]
    while True:
        taken: list[tuple[int, int, int]] = []
        centres = _place(rng, radii, taken)
        if centres is not None:
            break
    objects = [
        ShapeObject(shape=s, color=c, size=sz, cx=x, cy=y, r=r)
        for (c, s), sz, r, (x, y) in zip(pairs, sizes, radii, centres)
    ]
    distractors = []
    for _ in range(rng.randint(1, 4)):
        x0, y0 = rng.randint(0, IMAGE_SIZE - 1), rng.randint(0, IMAGE_SIZE - 1)
        length, angle = rng.randint(15, 60), rng.uniform(0, math.pi)
        x1 = int(x0 + length * math.cos(angle))
        y1 = int(y0 + length * math.sin(angle))
        distractors.append((x0, y0, x1, y1, rng.randint(90, 170)))
    mode = POPE_MODES[index % len(POPE_MODES)]
    return Scene(
        image_id=image_id or f"shapes-{seed}",
        seed=seed,
        objects=objects,
        distractors=distractors,
        count_target=target,
        count=count,
        pope_mode=mode,
    )


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        a = -math.pi / 2 + i * math.pi / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _draw(draw: ImageDraw.ImageDraw, o: ShapeObject, fill) -> None:
    cx, cy, r = o.cx, o.cy, o.r
    if o.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif o.shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif o.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)], fill=fill)
    elif o.shape == "star":
        draw.polygon(_star(cx, cy, r * 1.1), fill=fill)
    else:  # pragma: no cover - guarded by SHAPES
        raise ValueError(o.shape)


def render_scene(scene: Scene) -> tuple[Image.Image, np.ndarray]:
    """Render the RGB image and the object id map of a scene (deterministic in its seed)."""
    rng = np.random.default_rng(scene.seed)
    bg = rng.integers(205, 245, size=3)
    pixels = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.int16)
    pixels[:] = bg
    img = Image.fromarray(pixels.astype(np.uint8), "RGB")
    ids = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw, draw_ids = ImageDraw.Draw(img), ImageDraw.Draw(ids)
    for x0, y0, x1, y1, grey in scene.distractors:
        draw.line([x0, y0, x1, y1], fill=(grey, grey, grey), width=3)
    for i, o in enumerate(scene.objects):
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLORS[o.color], jitter))
        _draw(draw, o, fill)
        _draw(draw_ids, o, i + 1)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, size=(IMAGE_SIZE, IMAGE_SIZE, 1))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return img, np.asarray(ids, dtype=np.uint8)


def patch_labels(scene: Scene, min_fraction: float = 0.25) -> np.ndarray:
    """[576] int array: index + 1 of the object covering each 14 px patch (0 = background).

    A patch belongs to an object if the object covers at least ``min_fraction`` of it.
    """
    ids = scene.id_map.reshape(GRID, PATCH_SIZE, GRID, PATCH_SIZE).transpose(0, 2, 1, 3).reshape(GRID * GRID, -1)
    labels = np.zeros(GRID * GRID, dtype=np.int64)
    best = np.zeros(GRID * GRID)
    for i in range(len(scene.objects)):
        frac = (ids == i + 1).mean(axis=1)
        take = (frac >= min_fraction) & (frac > best)
        labels[take] = i + 1
        best = np.maximum(best, frac)
    return labels


def _existence(color: str, shape: str) -> str:
    q = QUESTION_TEMPLATES["existence"].format(color=color, shape=shape)
    return q.replace("Is there a ", "Is there an ", 1) if color[0] in "aeiou" else q


def _negative(scene: Scene, mode: str, rng: random.Random) -> tuple[str, str]:
    present = scene.pairs()
    absent = [p for p in _PAIRS if p not in present]
    if mode == "random":
        return rng.choice(absent)
    if mode == "popular":
        ranked = sorted(absent, key=lambda p: (-PAIR_PRIOR[p], _PAIRS.index(p)))
        return rng.choice(ranked[:_POPULAR_TOP])
    if mode == "adversarial":
        colors = {c for c, _ in present}
        shapes = {s for _, s in present}
        hard = [p for p in absent if p[0] in colors or p[1] in shapes]
        return rng.choice(hard or absent)
    raise ValueError(f"unknown POPE mode {mode!r}")


def count_question(kind: str, value: str) -> str:
    """The counting question about a shape (``kind="shape"``) or a colour (``kind="color"``)."""
    if kind == "shape":
        return QUESTION_TEMPLATES["count_shape"].format(plural=PLURALS[value])
    if kind == "color":
        return QUESTION_TEMPLATES["count_color"].format(color=value)
    raise ValueError(f"kind must be 'shape' or 'color', got {kind!r}")


def make_questions(scene: Scene, categories: Iterable[str] = CATEGORIES) -> list[VQARecord]:
    """The questions of one scene (deterministic in the scene seed)."""
    rng = random.Random(scene.seed * 7 + 1)
    cats = set(categories)
    out: list[VQARecord] = []

    def add(q: str, a: str, cat: str, mode: str | None = None) -> None:
        out.append(
            VQARecord(
                image=None,  # filled lazily below
                question=q,
                answer=a,
                category=cat,
                pope_mode=mode,
                image_id=scene.image_id,
                question_id=f"{scene.image_id}-{len(out)}",
                scene=scene,
            )
        )

    if "existence" in cats:
        pos = rng.choice(sorted(scene.pairs()))
        neg = _negative(scene, scene.pope_mode, rng)
        pair = [(pos, "yes"), (neg, "no")]
        rng.shuffle(pair)
        for (c, s), a in pair:
            add(_existence(c, s), a, "existence", scene.pope_mode)
    if "color" in cats:
        counts: dict[str, int] = {}
        for o in scene.objects:
            counts[o.shape] = counts.get(o.shape, 0) + 1
        unique = [o for o in scene.objects if counts[o.shape] == 1]
        if unique:
            o = rng.choice(unique)
            add(QUESTION_TEMPLATES["color"].format(shape=o.shape), o.color, "color")
    if "count" in cats:
        kind, value = scene.count_target
        n = sum((o.shape if kind == "shape" else o.color) == value for o in scene.objects)
        assert n == scene.count
        add(count_question(kind, value), str(n), "count")
    return out


def iter_split(
    split: str, num_images: int, seed: int = 0, categories: Iterable[str] = CATEGORIES, start: int = 0
) -> Iterator[VQARecord]:
    """Yield the records of scenes ``start .. start + num_images - 1`` of a split."""
    cats = tuple(categories)
    for i in range(start, start + num_images):
        s = scene_seed(split, i, seed)
        scene = sample_scene(s, index=i, image_id=f"{split}-{seed}-{i:06d}")
        for rec in make_questions(scene, cats):
            rec.image = scene.image
            yield rec


def generate_split(
    split: str, num_images: int, seed: int = 0, categories: Iterable[str] = CATEGORIES, start: int = 0
) -> list[VQARecord]:
    """All records of ``num_images`` scenes of ``split`` (see :func:`iter_split`)."""
    return list(iter_split(split, num_images, seed=seed, categories=categories, start=start))


def image_digest(image: Image.Image) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def write_jsonl(split_dir: str | Path, records: Iterable[VQARecord], filename: str = "data.jsonl") -> Path:
    """Write records as ``split_dir/data.jsonl`` + ``split_dir/images/<image_id>.png``.

    Each JSON line holds ``image`` (path relative to ``split_dir``), ``question``, ``answer``,
    ``category``, ``pope_mode``, ``image_id`` and ``question_id``. Returns the JSONL path.
    """
    split_dir = Path(split_dir)
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    path = split_dir / filename
    written: set[str] = set()
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            rel = f"images/{rec.image_id}.png"
            if rec.image_id not in written:
                rec.image.save(split_dir / rel)
                written.add(rec.image_id)
            f.write(json.dumps(rec.to_json(rel)) + "\n")
    return path


def read_jsonl(path: str | Path, load_images: bool = True) -> list[dict]:
    """Read a JSONL written by :func:`write_jsonl`; ``image`` becomes a PIL image if asked."""
    path = Path(path)
    root = path.parent
    rows = []
    cache: dict[str, Image.Image] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if load_images:
                p = row["image"]
                if p not in cache:
                    with Image.open(root / p) as im:
                        cache[p] = im.convert("RGB")
                row["image"] = cache[p]
            rows.append(row)
    return rows
