"""Helpers of the example lmms-eval tasks on the shapes set (see README.md next to this file)."""

from pathlib import Path

from PIL import Image

CHOICES = ["yes", "no"]
#: The folder of the tasks' data file (as in their YAML): JSONL image paths are relative to it.
DATA_DIR = Path("data/shapes-lmms")


def keep_yes_no(dataset):
    """Only the yes/no (existence) questions."""
    return dataset.filter(lambda doc: doc["answer"] in CHOICES)


def doc_to_visual(doc):
    path = Path(doc["image"])
    return [Image.open(path if path.is_absolute() else DATA_DIR / path).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def doc_to_target(doc):
    return CHOICES.index(doc["answer"])


def process_generation(doc, results):
    return {"exact": float(results[0].strip().lower() == doc["answer"])}
