"""Helpers of the test's local lmms-eval tasks over a tokensel JSONL file (``tokensel-shapes/``
under lmms-eval's working directory, as in the YAML files next to this one)."""

from pathlib import Path

from PIL import Image

#: The tasks' data file (as in their YAML): relative image paths are resolved against its folder.
DATA = Path("tokensel-shapes/data.jsonl")


def doc_to_visual(doc):
    path = Path(doc["image"])
    return [Image.open(path if path.is_absolute() else DATA.parent / path).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_generation(doc, results):
    from tokensel.experiments.metrics import is_correct  # tokensel's scoring rule

    return {"correct": float(is_correct(results[0], doc["answer"]))}


def candidates(docs):
    """Per doc, the answers `tokensel eval` chooses from with ``eval.scoring=choice`` on a JSONL
    file: yes/no questions between yes and no, others between the distinct (lower-cased) answers
    of their category, in order of first appearance."""
    table = {}
    for doc in docs:
        answers = table.setdefault(doc.get("category"), [])
        if doc["answer"].strip().lower() not in answers:
            answers.append(doc["answer"].strip().lower())
    yes_no = ["yes", "no"]
    return [yes_no if d["answer"].strip().lower() in yes_no else table[d.get("category")] for d in docs]


def add_choices(dataset):
    choices = candidates(list(dataset))
    return dataset.map(lambda doc, i: {"choices": choices[i]}, with_indices=True)


def doc_to_choice(doc):
    return doc["choices"]


def doc_to_target(doc):
    return doc["choices"].index(doc["answer"].strip().lower())
