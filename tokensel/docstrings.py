"""Docstrings as plain text for the command line (``tokensel selectors``, ``--help``).

reStructuredText markup (````code````, ``:class:`~x.Y```) is for the API reference; a terminal
shows it raw. :func:`plain` removes it, :func:`summary` gives a docstring's first sentence.
"""

from __future__ import annotations

import re

__all__ = ["plain", "summary"]

_ROLE = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def plain(text: str) -> str:
    """``text`` without reST markup: roles (``:func:`~a.b``` -> ``b``; ``:class:`x```
    -> ``x``) and double backticks (````x```` -> ``x``)."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0)[m.group(0).index("`") + 1] == "~"
                     else m.group(1), text)
    return text.replace("``", "")


def summary(doc: str | None) -> str:
    """The first sentence of ``doc``'s first paragraph, on one line, in plain text ("" for none)."""
    para = (doc or "").strip().split("\n\n")[0]
    line = plain(" ".join(part.strip() for part in para.splitlines()))
    match = re.search(r"(?<=[.!?])\s+(?=[A-Z(])", line)
    return line[: match.start()] if match else line
