"""Plain-text docstrings for the command line: ``tokensel selectors`` and ``--help``."""

from __future__ import annotations

import subprocess
import sys

import tokensel
from tokensel.docstrings import plain, summary


def test_plain_removes_rest_markup():
    assert plain("``1 - cos`` of :class:`~tokensel.batch.TokenBatch` and :func:`tokensel.maximize`") == \
        "1 - cos of TokenBatch and tokensel.maximize"


def test_summary_is_the_first_sentence_on_one_line():
    doc = "Merge tokens by pooling: the grid\nis cut into ``k`` cells. Each is averaged.\n\nArgs:\n  x: y."
    assert summary(doc) == "Merge tokens by pooling: the grid is cut into k cells."
    assert summary(None) == "" and summary("No period at the end") == "No period at the end"
    assert summary("Uses e.g. 0.5 here. Then more.") == "Uses e.g. 0.5 here."


def test_every_registered_name_has_its_own_one_line_plain_description():
    names = tokensel.list_selectors()
    descriptions = [tokensel.selector_info(n).description for n in names]
    for name, text in zip(names, descriptions):
        assert text and "\n" not in text and "``" not in text and ":class:" not in text, (name, text)
        assert text.endswith((".", ")")), f"{name}: description cut mid-sentence: {text!r}"
    assert len(set(descriptions)) == len(names), "two registered names share a description"


def test_help_texts_have_no_markup():
    for args in (["compare"], ["demo"], ["bench"], ["bench", "solvers"], ["bench", "prefill"], ["selectors"]):
        cmd = [sys.executable, "-m", "tokensel.experiments.cli", *args] + ([] if args == ["selectors"] else ["--help"])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        assert "``" not in out and ":class:" not in out and ":func:" not in out, (args, out)
