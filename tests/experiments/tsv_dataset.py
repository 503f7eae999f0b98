"""A dataset in one file, as a contributor writes it: tab-separated lines ``image<TAB>question<TAB>answer``
(image relative to the file), with its own metric, headline metric and console table.

Imported by tests/experiments/test_dataset_registry.py (registers ``tsv-yesno``) and installed as
the module of a ``tokensel.datasets`` plug-in distribution there."""

from __future__ import annotations

from pathlib import Path

from tokensel.experiments import DatasetError, Sample, register_dataset
from tokensel.experiments.metrics import yes_no


def yes_share(records: list[dict]) -> dict:
    """``tsv_yes_share``: the share of predictions whose first yes/no word is yes."""
    return {"tsv_yes_share": sum(yes_no(r["prediction"]) == "yes" for r in records) / len(records)}


def yes_table(metrics: dict) -> str:
    return f"TSV yes share: {metrics['tsv_yes_share']:.6f}"


@register_dataset("tsv-yesno", path="file", metrics=yes_share, headline=("tsv_yes_share",), tables=(yes_table,))
def load_tsv(ds) -> list[Sample]:
    """Tab-separated yes/no questions."""
    path = Path(ds.path)
    samples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) != 3:
            raise DatasetError(f"{path}:{n}: expected image<TAB>question<TAB>answer")
        image, question, answer = fields
        samples.append(Sample(id=f"t{n}", image=str(path.parent / image), question=question, answer=answer))
    return samples
