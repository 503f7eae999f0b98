"""Build and pip-install (offline, into a target folder) tiny selector plug-in distributions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

GOOD = '''
"""A tokensel plug-in: cosine facility location as an ObjectiveSelector."""
import torch

import tokensel
from tokensel.objectives import FacilityLocation


class CosineFL(tokensel.ObjectiveSelector):
    """Cosine facility location over the vision tokens (plug-in)."""

    def objective(self, image):
        x = torch.nn.functional.normalize(image.vision.double(), dim=-1)
        return FacilityLocation((x @ x.T).clamp_min(0))
'''

BROKEN = '''
import tokensel_missing_dependency  # noqa: F401
'''


def write_distribution(root: Path, dist: str, module: str, source: str, entries: dict[str, str],
                       group: str = "tokensel.selectors") -> Path:
    """A source tree ``root/dist`` with ``module.py`` and entry points ``name = value`` in ``group``."""
    src = root / dist
    src.mkdir(parents=True)
    (src / f"{module}.py").write_text(textwrap.dedent(source))
    eps = "\n".join(f'"{name}" = "{value}"' for name, value in entries.items())
    (src / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.1.0"

        [tool.setuptools]
        py-modules = ["{module}"]

        [project.entry-points."{group}"]
    ''') + eps + "\n")
    return src


def pip_install(src: Path, target: Path) -> None:
    """``pip install`` offline into ``target`` without build isolation or dependencies."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation", "--no-deps",
         "--disable-pip-version-check", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300, cwd=src,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def install_plugins(root: Path) -> Path:
    """Installs ``tsplug-cosine`` (selector ``plug-cosine``) and ``tsplug-broken`` (``plug-broken``,
    which fails to import) into ``root/site``; returns that folder."""
    site = root / "site"
    pip_install(write_distribution(root, "tsplug-cosine", "tsplug_cosine", GOOD,
                                   {"plug-cosine": "tsplug_cosine:CosineFL"}), site)
    pip_install(write_distribution(root, "tsplug-broken", "tsplug_broken", BROKEN,
                                   {"plug-broken": "tsplug_broken:Missing"}), site)
    return site
