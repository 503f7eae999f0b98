"""Evaluation datasets: the registry (``@register_dataset``), one JSONL format, and the built-in
datasets (``jsonl``, ``shapes``, ``pope``, ``gqa``, ``mme``) registered through it.

A dataset is a loader from the config group ``dataset`` to :class:`Sample` s, plus what the
rest of a run needs to know about it: how ``dataset.path`` is checked before anything loads,
the metrics it adds to the common ones (:func:`tokensel.experiments.metrics.compute_metrics`),
its headline metrics, its console tables and its closed answer sets (``eval.scoring:
choice``). ``dataset.format`` names it. A new dataset is one module::

    from tokensel.experiments import register_dataset, read_jsonl

    @register_dataset("mine", path="file", headline=("my_metric",), metrics=my_metrics, table=my_table)
    def load_mine(ds):            # ds: the dataset config group (path, image_root, ...)
        return read_jsonl(ds.path)

Other distributions register datasets through the entry-point group ``tokensel.datasets``
(one entry per name, naming a :class:`Dataset`; loaded as the selector plug-ins are, see
:class:`tokensel.plugins.PluginGroup`).

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
import inspect
import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from tokensel.experiments.metrics import N_BOOTSTRAP, compute_metrics, is_yes_no_set, mme_error_bars, mme_metrics
from tokensel.experiments.tables import mme_table
from tokensel.plugins import PluginGroup
from tokensel.registry import Registry, owner_of
from tokensel.zoo import shapes

__all__ = [
    "Dataset",
    "register_dataset",
    "unregister_dataset",
    "get_dataset",
    "list_datasets",
    "DATASETS",
    "DATASET_PLUGINS",
    "PATH_RULES",
    "answers_by_category",
    "candidate_answers",
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


# ----------------------------------------------------------------------------- registry

#: ``path=`` rules of :func:`register_dataset`: what ``dataset.path`` must be before loading.
PATH_RULES = ("file", "folder", "file-or-missing")

Loader = Callable[[Any], "list[Sample]"]


@dataclass(frozen=True)
class Dataset:
    """A registered dataset (see :func:`register_dataset`); calling it calls its loader."""

    name: str
    #: ``load(ds) -> list[Sample]`` for the config group ``ds`` (``ds.path``, ``ds.image_root``,
    #: ``ds.generate_images``); ``offset`` / ``limit`` and the image checks (every image file of
    #: the samples kept exists and decodes, with ``eval.check_images``) are applied after it.
    load: Loader
    #: One of :data:`PATH_RULES`: ``file`` (must exist), ``folder`` (a folder that must exist),
    #: ``file-or-missing`` (a file, or nothing yet: the loader creates it).
    path: str = "file"
    #: ``metrics(records) -> dict``: metrics added to the common ones.
    metrics: Optional[Callable[[list], dict]] = None
    #: ``error_bars(records, seed=, n_boot=) -> dict``: error bars of those metrics.
    error_bars: Optional[Callable[..., dict]] = None
    #: Metrics printed (and summarised) beside accuracy, when present.
    headline: tuple = ()
    #: ``table(metrics) -> str | None``: console tables printed after the common ones.
    tables: tuple = ()
    #: ``candidates(samples) -> {category: [answers]}`` for ``eval.scoring: choice``
    #: (default: the answers seen in each category, :func:`answers_by_category`).
    candidates: Optional[Callable[[list], dict]] = None
    description: str = ""

    def __call__(self, ds: Any) -> "list[Sample]":
        return self.load(ds)

    def compute_metrics(self, records: Iterable[dict], *, error_bars_on: bool = True, seed: int = 0,
                        n_boot: int = N_BOOTSTRAP) -> dict:
        """The common metrics of :func:`~tokensel.experiments.metrics.compute_metrics` and this
        dataset's own, with their error bars when ``error_bars_on``."""
        records = list(records)
        out = compute_metrics(records, error_bars_on=error_bars_on, seed=seed, n_boot=n_boot)
        if self.metrics is not None:
            out.update(self.metrics(records))
        if error_bars_on and self.error_bars is not None:
            out.update(self.error_bars(records, seed=seed, n_boot=n_boot))
        return out

    def check_path(self, path: Path) -> Optional[str]:
        """Why ``path`` does not fit the path rule, or None."""
        if self.path == "folder":
            return None if path.is_dir() else f"{self.name} folder not found: {str(path)!r}"
        if self.path == "file-or-missing":
            ok = not path.exists() or path.is_file()
            return None if ok else f"must be a file (created if missing), got a folder: {str(path)!r}"
        return None if path.is_file() else f"dataset file not found: {str(path)!r}"


#: The registered datasets (a :class:`tokensel.registry.Registry`: a taken name is refused).
DATASETS: Registry[Dataset] = Registry("dataset", owner=lambda ds: owner_of(ds.load))


def _check_registration(name: str, path: str, load: object) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_dataset: name must be a non-empty str, got {name!r}")
    if path not in PATH_RULES:
        raise ValueError(f"register_dataset({name!r}): path must be one of {PATH_RULES}, got {path!r}")
    if not callable(load):
        raise TypeError(f"register_dataset({name!r}) decorates the loader, a callable; got {load!r}")


def register_dataset(
    name: str,
    *,
    path: str = "file",
    metrics: Optional[Callable[[list], dict]] = None,
    error_bars: Optional[Callable[..., dict]] = None,
    headline: Sequence[str] = (),
    tables: Sequence[Callable[[dict], Optional[str]]] = (),
    candidates: Optional[Callable[[list], dict]] = None,
) -> Callable[[Loader], Dataset]:
    """Decorator: register the loader ``load(ds) -> list[Sample]`` as the dataset ``name``
    (``dataset.format: name`` in a config); returns the :class:`Dataset`. The arguments are
    the fields of :class:`Dataset`; a taken name raises
    :class:`~tokensel.registry.DuplicateNameError`."""

    def decorator(load: Loader) -> Dataset:
        _check_registration(name, path, load)
        doc = inspect.getdoc(load) or ""
        ds = Dataset(name=name, load=load, path=path, metrics=metrics, error_bars=error_bars,
                     headline=tuple(headline), tables=tuple(tables), candidates=candidates,
                     description=doc.splitlines()[0] if doc else "")
        return DATASETS.add(name, ds)

    return decorator


def unregister_dataset(name: str) -> None:
    """Remove the dataset registered as ``name`` (for tests; see also ``DATASETS.registered``)."""
    DATASETS.remove(name)


def _register_plugin(name: str, ds: Dataset) -> None:
    _check_registration(name, ds.path, ds.load)
    DATASETS.add(name, replace(ds, name=name))


#: The dataset entry-point group ``tokensel.datasets``: each entry names a :class:`Dataset`.
DATASET_PLUGINS: PluginGroup[Dataset] = PluginGroup(
    group="tokensel.datasets",
    kind="dataset",
    expected="a tokensel.experiments.datasets.Dataset (what @register_dataset returns)",
    accepts=lambda obj: isinstance(obj, Dataset),
    register=_register_plugin,
    registry=DATASETS,
    same=lambda entry, ds: entry.load is ds.load,
)


def get_dataset(name: str) -> Dataset:
    """The dataset registered as ``name`` (a plug-in is loaded on first use);
    :class:`~tokensel.registry.UnknownNameError` (a ``ValueError``) listing the registered
    names if there is none."""
    return DATASET_PLUGINS.lookup(name)


def list_datasets() -> list[str]:
    """Sorted names of the registered datasets, installed plug-ins included."""
    DATASET_PLUGINS.load_all(stacklevel=3)
    return DATASETS.names()


# ----------------------------------------------------------------------------- loading


def answers_by_category(samples: list[Sample]) -> dict:
    """``{category: [answers]}``: the distinct answers of each category (key None for samples
    without one), in order of appearance."""
    out: dict = {}
    for s in samples:
        answers = out.setdefault(s.category, [])
        if s.answer.strip().lower() not in answers:
            answers.append(s.answer.strip().lower())
    return out


def candidate_answers(samples: list[Sample], dataset_format: str = "jsonl") -> dict:
    """Closed answer sets for ``eval.scoring: choice``: ``{category: [answers]}`` (key None for
    samples without a category), from the dataset's ``candidates`` (default
    :func:`answers_by_category`). Yes/no questions always choose between yes and no."""
    rule = get_dataset(dataset_format).candidates or answers_by_category
    return rule(samples)


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
    """Samples described by a ``dataset`` config group (``ds_cfg.format`` names a registered
    dataset), after ``offset`` / ``limit`` (with ``with_all``: also every sample before slicing)."""
    samples = get_dataset(ds_cfg.format).load(ds_cfg)
    everything = samples
    start = int(ds_cfg.offset)
    stop = None if ds_cfg.limit is None else start + int(ds_cfg.limit)
    samples = samples[start:stop]
    if not samples:
        raise DatasetError(f"dataset.offset/limit select no samples from {ds_cfg.path}")
    if check_images:
        missing = [s for s in samples if not Path(s.image).is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} image file(s) not found, e.g. {missing[0].image!r} (sample {missing[0].id!r})")
        verify_images(s.image for s in samples)
    return (samples, everything) if with_all else samples


# ----------------------------------------------------------------------------- built-in datasets


def _mme_if_categorised(records: list) -> dict:
    """The MME score of yes/no-only records with categories (any MME-style data)."""
    return mme_metrics(records) if _categorised_yes_no(records) else {}


def _mme_bars_if_categorised(records: list, *, seed: int, n_boot: int) -> dict:
    return mme_error_bars(records, seed=seed, n_boot=n_boot) if _categorised_yes_no(records) else {}


def _categorised_yes_no(records: list) -> bool:
    return is_yes_no_set(records) and any(r.get("category") for r in records)


_COMMON = dict(metrics=_mme_if_categorised, error_bars=_mme_bars_if_categorised, headline=("mme_score",),
               tables=(mme_table,))


@register_dataset("jsonl", **_COMMON)
def load_jsonl(ds: Any) -> list[Sample]:
    """The tokensel JSONL format (``dataset.path``: the file)."""
    return read_jsonl(Path(ds.path), check_images=False)


def _shapes_candidates(samples: list[Sample]) -> dict:
    return {cat: [str(a) for a in shapes.answer_vocabulary(cat)] for cat in {s.category for s in samples}}


@register_dataset("shapes", path="file-or-missing", candidates=_shapes_candidates, **_COMMON)
def load_shapes(ds: Any) -> list[Sample]:
    """The synthetic shapes set as JSONL, ``dataset.generate_images`` scenes written first if
    the file is missing."""
    path = Path(ds.path)
    if not path.is_file():
        shapes.write_jsonl(path.parent, shapes.iter_split("test", int(ds.generate_images), seed=0), filename=path.name)
    return read_jsonl(path, check_images=False)


@register_dataset("pope", **_COMMON)
def load_pope(ds: Any) -> list[Sample]:
    """A POPE question file and the COCO image folder ``dataset.image_root``."""
    return convert_pope(ds.path, ds.image_root)


@register_dataset("gqa", **_COMMON)
def load_gqa(ds: Any) -> list[Sample]:
    """A GQA balanced question JSON and the image folder ``dataset.image_root``."""
    return convert_gqa(ds.path, ds.image_root)


def _mme_if_yes_no(records: list) -> dict:
    return mme_metrics(records) if is_yes_no_set(records) else {}


def _mme_bars_if_yes_no(records: list, *, seed: int, n_boot: int) -> dict:
    return mme_error_bars(records, seed=seed, n_boot=n_boot) if is_yes_no_set(records) else {}


@register_dataset("mme", path="folder", metrics=_mme_if_yes_no, error_bars=_mme_bars_if_yes_no,
                  headline=("mme_score",), tables=(mme_table,))
def load_mme(ds: Any) -> list[Sample]:
    """An MME-style root folder (one folder per category)."""
    return convert_mme(ds.path)


_CONVERTERS = {"pope": convert_pope, "gqa": convert_gqa, "mme": lambda source, images: convert_mme(source)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tokensel.experiments.datasets",
                                 description="convert a local benchmark copy to tokensel JSONL")
    ap.add_argument("format", choices=list(_CONVERTERS))
    ap.add_argument("source", help="POPE question file, GQA question JSON, or MME root folder")
    ap.add_argument("--images", default=None, help="image folder (POPE: COCO val2014; GQA: images/)")
    ap.add_argument("-o", "--output", required=True, help="JSONL file to write")
    args = ap.parse_args(argv)
    samples = _CONVERTERS[args.format](args.source, args.images)
    write_jsonl(samples, args.output)
    print(f"wrote {len(samples)} samples to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
