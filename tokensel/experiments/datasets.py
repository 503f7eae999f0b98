"""Evaluation data: one JSONL format and converters from the usual local layouts.

The tokensel JSONL format has one sample per line::

    {"id": "0", "image": "images/0.png", "question": "Is there a red circle?", "answer": "yes",
     "category": "existence"}

``image`` is relative to the JSONL file (absolute paths are accepted too); ``id`` defaults to the
line number and ``category`` is optional. Converters read local copies of POPE, GQA and
MME-style benchmarks (nothing is downloaded) and either return samples or write the JSONL file::

    python -m tokensel.experiments.datasets pope coco_pope_random.json --images val2014 -o pope.jsonl
    python -m tokensel.experiments.datasets gqa testdev_balanced_questions.json --images images -o gqa.jsonl
    python -m tokensel.experiments.datasets mme MME_Benchmark_release_version -o mme.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional

__all__ = [
    "Sample",
    "read_jsonl",
    "write_jsonl",
    "convert_pope",
    "convert_gqa",
    "convert_mme",
    "load_dataset",
    "DatasetError",
    "verify_images",
]

_CORE_FIELDS = ("id", "image", "question", "answer", "category")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DatasetError(ValueError):
    """A dataset file that cannot be read; the message names the file and line."""


@dataclass
class Sample:
    id: str
    image: str  # absolute path
    question: str
    answer: str
    category: Optional[str] = None
    #: Other fields of the JSONL line (e.g. ``pope_mode``, ``image_id``), kept in the results.
    extra: dict = field(default_factory=dict)

    def to_json(self, relative_to: Path | None = None) -> dict:
        d = asdict(self)
        extra = d.pop("extra") or {}
        d.update({k: v for k, v in extra.items() if k not in d})
        if relative_to is not None:
            try:
                d["image"] = os.path.relpath(self.image, relative_to)
            except ValueError:  # other drive on Windows
                pass
        if d["category"] is None:
            del d["category"]
        return d


def read_jsonl(path: str | os.PathLike, check_images: bool = True) -> list[Sample]:
    """Read a tokensel JSONL file; image paths are resolved against the file's folder."""
    path = Path(path)
    root = path.parent.resolve()
    samples: list[Sample] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{path}:{lineno}: each line must be a JSON object")
            for key in ("image", "question", "answer"):
                if key not in rec:
                    raise DatasetError(f"{path}:{lineno}: missing field {key!r}")
                if not isinstance(rec[key], str):
                    raise DatasetError(f"{path}:{lineno}: field {key!r} must be a string")
            image = Path(rec["image"])
            if not image.is_absolute():
                image = Path(os.path.normpath(root / image))
            if check_images and not image.is_file():
                raise DatasetError(f"{path}:{lineno}: image file not found: {str(image)!r}")
            category = rec.get("category")
            extra = {k: v for k, v in rec.items() if k not in _CORE_FIELDS and isinstance(v, (str, int, float, bool))}
            samples.append(
                Sample(
                    id=str(rec.get("id", rec.get("question_id", lineno - 1))),
                    image=str(image),
                    question=rec["question"],
                    answer=rec["answer"],
                    category=None if category is None else str(category),
                    extra=extra,
                )
            )
    if not samples:
        raise DatasetError(f"{path}: holds no samples")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: sample ids are not unique")
    return samples


def write_jsonl(samples: Iterable[Sample], path: str | os.PathLike) -> Path:
    """Write samples as tokensel JSONL with image paths relative to the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.to_json(relative_to=root)) + "\n")
    return path


# ----------------------------------------------------------------------------- converters


def convert_pope(question_file: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[Sample]:
    """POPE question file (one JSON object a line: ``question_id``, ``image``, ``text``,
    ``label``; e.g. ``coco_pope_adversarial.json``) + the COCO image folder.

    The category is the POPE split read from the file name (random / popular / adversarial)."""
    question_file = Path(question_file)
    image_root = Path(image_root) if image_root is not None else question_file.parent
    stem = question_file.stem.lower()
    split = next((s for s in ("adversarial", "popular", "random") if s in stem), None)
    out = []
    with open(question_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                out.append(
                    Sample(
                        id=str(rec.get("question_id", lineno)),
                        image=str((image_root / rec["image"]).resolve()),
                        question=rec["text"],
                        answer=str(rec["label"]).strip().lower(),
                        category=rec.get("category", split),
                    )
                )
            except (json.JSONDecodeError, KeyError) as exc:
                raise DatasetError(f"{question_file}:{lineno}: not a POPE record ({exc})") from None
    return out


def convert_gqa(question_file: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[Sample]:
    """GQA balanced question JSON (``{qid: {"imageId", "question", "answer", "types"}}``) +
    the image folder (``{imageId}.jpg``). The category is the structural question type."""
    question_file = Path(question_file)
    image_root = Path(image_root) if image_root is not None else question_file.parent / "images"
    try:
        data = json.loads(Path(question_file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{question_file}: not valid JSON ({exc.msg})") from None
    if isinstance(data, list):  # some tools store a list with "question_id"
        data = {str(r.get("question_id", i)): r for i, r in enumerate(data)}
    out = []
    for qid, rec in data.items():
        try:
            image_id = rec["imageId"] if "imageId" in rec else rec["image"]
        except KeyError:
            raise DatasetError(f"{question_file}: question {qid} has no imageId") from None
        image = Path(image_id)
        if not image.suffix:
            image = image.with_suffix(".jpg")
        types = rec.get("types") or {}
        out.append(
            Sample(
                id=str(qid),
                image=str((image_root / image).resolve()),
                question=rec["question"],
                answer=str(rec["answer"]),
                category=types.get("structural") if isinstance(types, dict) else None,
            )
        )
    return out


def _mme_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, questions.txt) pairs of one MME category folder, in either layout."""
    qa_dir, img_dir = folder / "questions_answers_YN", folder / "images"
    if qa_dir.is_dir():
        pairs = []
        for txt in sorted(qa_dir.glob("*.txt")):
            img = next((img_dir / (txt.stem + e) for e in _IMAGE_EXTS if (img_dir / (txt.stem + e)).is_file()), None)
            if img is not None:
                pairs.append((img, txt))
        return pairs
    pairs = []
    for txt in sorted(folder.glob("*.txt")):
        img = next((folder / (txt.stem + e) for e in _IMAGE_EXTS if (folder / (txt.stem + e)).is_file()), None)
        if img is not None:
            pairs.append((img, txt))
    return pairs


def convert_mme(root: str | os.PathLike) -> list[Sample]:
    """MME-style root: one folder per category, each with image files and a ``.txt`` of the
    same stem holding ``question<TAB>answer`` lines (or ``images/`` + ``questions_answers_YN/``
    subfolders). Sample ids are ``category/stem/n``."""
    root = Path(root)
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for img, txt in _mme_pairs(folder):
            for n, line in enumerate(txt.read_text(encoding="utf-8").splitlines()):
                if not line.strip():
                    continue
                if "\t" not in line:
                    raise DatasetError(f"{txt}:{n + 1}: expected 'question<TAB>answer'")
                q, a = line.rsplit("\t", 1)
                out.append(
                    Sample(
                        id=f"{folder.name}/{img.stem}/{n}",
                        image=str(img.resolve()),
                        question=q.strip(),
                        answer=a.strip().lower(),
                        category=folder.name,
                    )
                )
    if not out:
        raise DatasetError(f"{root}: found no MME category folders with image/txt pairs")
    return out


def _generate_shapes(path: Path, num_images: int, split: str = "test", seed: int = 0) -> None:
    """Write ``num_images`` scenes of the synthetic shapes set (several questions each)."""
    from tokensel.zoo import shapes

    shapes.write_jsonl(path.parent, shapes.iter_split(split, num_images, seed=seed), filename=path.name)


def candidate_answers(samples: list[Sample], dataset_format: str = "jsonl") -> dict:
    """Closed answer sets for ``eval.scoring: choice``: ``{category: [answers]}`` (key None for
    samples without a category). Yes/no questions always choose between yes and no."""
    out: dict = {}
    if dataset_format == "shapes":
        from tokensel.zoo.shapes import answer_vocabulary

        for cat in {s.category for s in samples}:
            out[cat] = [str(a) for a in answer_vocabulary(cat)]
        return out
    for s in samples:
        answers = out.setdefault(s.category, [])
        if s.answer.strip().lower() not in answers:
            answers.append(s.answer.strip().lower())
    return out


def candidates_for(sample: Sample, table: dict) -> list[str]:
    if sample.answer.strip().lower() in ("yes", "no"):
        return ["yes", "no"]
    return table.get(sample.category) or [sample.answer]


def verify_images(paths: Iterable[str]) -> None:
    """Decode every distinct image file once; raise DatasetError naming the first one that
    cannot be read (missing, truncated, not an image)."""
    from PIL import Image, UnidentifiedImageError

    for path in dict.fromkeys(paths):
        try:
            with Image.open(path) as im:
                im.load()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise DatasetError(f"image file {path!r} cannot be read: {exc}") from None


def load_dataset(ds_cfg, check_images: bool = True, with_all: bool = False):
    """Samples described by a ``dataset`` config group, after ``offset`` / ``limit``
    (with ``with_all``: also every sample before slicing)."""
    fmt, path = ds_cfg.format, Path(ds_cfg.path)
    if fmt == "jsonl":
        samples = read_jsonl(path, check_images=check_images)
    elif fmt == "shapes":
        if not path.is_file():
            _generate_shapes(path, int(ds_cfg.generate_images))
        samples = read_jsonl(path, check_images=check_images)
    elif fmt == "pope":
        samples = convert_pope(path, ds_cfg.image_root)
    elif fmt == "gqa":
        samples = convert_gqa(path, ds_cfg.image_root)
    elif fmt == "mme":
        samples = convert_mme(path)
    else:
        raise DatasetError(f"unknown dataset format {fmt!r}")
    everything = samples
    start = int(ds_cfg.offset)
    stop = None if ds_cfg.limit is None else start + int(ds_cfg.limit)
    samples = samples[start:stop]
    if not samples:
        raise DatasetError(f"dataset.offset/limit select no samples from {path}")
    if check_images and fmt != "jsonl":
        missing = [s.image for s in samples if not Path(s.image).is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} image file(s) not found, e.g. {missing[0]!r}")
    if check_images:
        verify_images(s.image for s in samples)
    return (samples, everything) if with_all else samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tokensel.experiments.datasets",
                                 description="convert a local benchmark copy to tokensel JSONL")
    ap.add_argument("format", choices=["pope", "gqa", "mme"])
    ap.add_argument("source", help="POPE question file, GQA question JSON, or MME root folder")
    ap.add_argument("--images", default=None, help="image folder (POPE: COCO val2014; GQA: images/)")
    ap.add_argument("-o", "--output", required=True, help="JSONL file to write")
    args = ap.parse_args(argv)
    if args.format == "pope":
        samples = convert_pope(args.source, args.images)
    elif args.format == "gqa":
        samples = convert_gqa(args.source, args.images)
    else:
        samples = convert_mme(args.source)
    write_jsonl(samples, args.output)
    print(f"wrote {len(samples)} samples to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
