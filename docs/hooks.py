"""MkDocs hook: the tutorials' notebooks, executed, from their single source in notebooks/.

Each tutorial is written once, as a jupytext "percent" script ``notebooks/NN_name.py``. Before
MkDocs collects the pages, :func:`on_pre_build` makes sure ``docs/tutorials/NN_name.ipynb``
exists and was executed from the current source (the source's SHA-256 is stored in the
notebook's metadata); stale or missing notebooks are executed with nbclient. The generated
``.ipynb`` files are build artifacts (git-ignored); mkdocs-jupyter renders them with their
outputs (figures included).

The same :func:`execute_tutorial` is what ``tests/docs/test_notebooks.py`` runs, so a test run
leaves fresh notebooks behind and the site build that follows does not execute them again.

Environment:
    TOKENSEL_DOCS_EXECUTE=0   render the notebooks without executing them (fast draft builds;
                              the pages then show code without outputs).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = ROOT / "notebooks"
OUTPUT_DIR = ROOT / "docs" / "tutorials"
META_KEY = "tokensel_docs"
TIMEOUT = 900  # seconds per cell


def tutorial_sources() -> list[Path]:
    """The tutorial sources, in order: ``notebooks/[0-9][0-9]_*.py``."""
    return sorted(SOURCE_DIR.glob("[0-9][0-9]_*.py"))


def source_digest(src: Path) -> str:
    return hashlib.sha256(src.read_bytes()).hexdigest()


def output_path(src: Path) -> Path:
    return OUTPUT_DIR / (src.stem + ".ipynb")


def is_fresh(src: Path, executed: bool = True) -> bool:
    """Whether the generated notebook of ``src`` matches the source (and was executed)."""
    import nbformat

    dst = output_path(src)
    if not dst.is_file():
        return False
    try:
        meta = nbformat.read(dst, as_version=4).metadata.get(META_KEY, {})
    except Exception:
        return False
    return meta.get("source_sha256") == source_digest(src) and (meta.get("executed") or not executed)


def _kernel_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("WANDB_SILENT", "true")
    env.setdefault("TQDM_DISABLE", "1")  # progress bars are noise in a rendered page
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # the kernel must import the checkout's tokensel even when it is not installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


# stderr lines that are progress bars or environment chatter, not part of the lesson
_NOISE = ("Loading weights", "IProgress not found", "from .autonotebook import", "it/s]", "s/it]", "\x1b[",
          "wandb:")


def _drop_noise(nb) -> None:
    """Remove progress bars and environment warnings (stderr) from the executed cells."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines = [ln for ln in out["text"].splitlines(keepends=True) if ln.strip() and not any(s in ln for s in _NOISE)]
                if not lines:
                    continue
                out["text"] = "".join(lines)
            kept.append(out)
        cell["outputs"] = kept


_SIBLING_LINK = re.compile(r"\]\((\d\d_[A-Za-z0-9_]+)\.(?:ipynb|py)(#[^)]*)?\)")


def _site_links(nb) -> None:
    """Links between tutorials are written ``[..](02_name.ipynb)`` in the sources (they work in
    Jupyter); on the site each tutorial is the page ``tutorials/02_name/``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _SIBLING_LINK.sub(lambda m: f"](../{m.group(1)}/{m.group(2) or ''})", cell.source)


def execute_tutorial(src: Path, execute: bool = True, timeout: int = TIMEOUT):
    """Read the jupytext source ``src``, execute it top to bottom in a fresh kernel (working
    directory: a temporary folder, so that tutorials leave no files behind), and write it to
    ``docs/tutorials/``. Returns the notebook. Raises ``nbclient`` 's ``CellExecutionError``
    on the first failing cell."""
    import jupytext
    import nbformat

    src = Path(src)
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)
    if execute:
        from nbclient import NotebookClient

        with tempfile.TemporaryDirectory(prefix="tokensel-tutorial-") as cwd:
            client = NotebookClient(
                nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                resources={"metadata": {"path": cwd}},
            )
            # nbclient starts the kernel with the parent's environment; pass ours explicitly
            client.execute(env=_kernel_env())
        _drop_noise(nb)
    _site_links(nb)
    nb.metadata[META_KEY] = {"source": str(src.relative_to(ROOT)), "source_sha256": source_digest(src),
                             "executed": bool(execute)}
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    dst = output_path(src)
    fd, tmp = tempfile.mkstemp(dir=OUTPUT_DIR, suffix=".ipynb.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        nbformat.write(nb, fh)
    os.replace(tmp, dst)
    return nb


def build_tutorials(force: bool = False) -> list[Path]:
    """Execute every tutorial whose generated notebook is missing or stale; return them all."""
    execute = os.environ.get("TOKENSEL_DOCS_EXECUTE", "1") != "0"
    out = []
    for src in tutorial_sources():
        if force or not is_fresh(src, executed=execute):
            execute_tutorial(src, execute=execute)
        out.append(output_path(src))
    return out


def on_pre_build(config, **kwargs) -> None:  # MkDocs hook
    build_tutorials()


# Some docstrings use Sphinx roles (:class:`Selection`); mkdocstrings renders the backticked
# name as code and leaves the role's text in front of it. Drop the role text (and Sphinx's "~"
# shortening prefix) so that the API pages read "Selection".
_SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):(<code[^>]*>)~?")


def on_page_content(html: str, **kwargs) -> str:  # MkDocs hook
    return _SPHINX_ROLE.sub(r"\1", html)


if __name__ == "__main__":
    import sys

    for path in build_tutorials(force="--force" in sys.argv):
        print(path.relative_to(ROOT))
