"""A run's folder: found by name and run key, written sample by sample, finished atomically.

Layout of ``<output_dir>/[<group>/]<name>[-N]/``:

* ``run.json``: the run key, status (``running`` / ``finished``), effective config, environment;
* ``config.yaml``: the effective configuration (a valid config);
* ``results.partial[.rankR].jsonl``: one line per sample, appended and flushed as each is
  produced (a crash loses nothing; a resumed run continues after the recorded samples);
* ``results.jsonl`` and ``metrics.json``: written when the run ends (``metrics.json`` last, so
  its presence means the run is finished); the partial files are then removed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any, Optional

__all__ = ["RunDir", "locate_run", "read_run_info"]

RUN_INFO = "run.json"
METRICS = "metrics.json"
RESULTS = "results.jsonl"


def read_run_info(path: Path) -> Optional[dict]:
    try:
        return json.loads((path / RUN_INFO).read_text())
    except (OSError, ValueError):
        return None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def locate_run(parent: Path, name: str, key: str) -> tuple[str, Path]:
    """Where the run with ``key`` named ``name`` lives under ``parent``:
    ``("finished", dir)``, ``("partial", dir)`` (started, not finished) or ``("new", dir)``
    (the first of ``name``, ``name-1``, ... that does not exist)."""
    n = 0
    while True:
        path = parent / (name if n == 0 else f"{name}-{n}")
        if not path.exists():
            return "new", path
        info = read_run_info(path)
        if info is not None and info.get("key") == key:
            return ("finished" if (path / METRICS).is_file() else "partial"), path
        n += 1


def _json_line(record: dict) -> str:
    return json.dumps(record, default=str) + "\n"


class RunDir:
    """One run's folder, seen from one rank (``rank`` of ``world``)."""

    def __init__(self, path: Path, rank: int = 0, world: int = 1) -> None:
        self.path = Path(path)
        self.rank, self.world = rank, world
        self._file: Optional[IO[str]] = None

    @property
    def partial_file(self) -> Path:
        suffix = "" if self.world == 1 else f".rank{self.rank}"
        return self.path / f"results.partial{suffix}.jsonl"

    def start(self, info: dict, config_yaml: str, fresh: bool) -> None:
        """Main rank: create the folder (emptied first when ``fresh``), write run.json and config.yaml."""
        if fresh and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in (METRICS, RESULTS):
            (self.path / stale).unlink(missing_ok=True)
        _atomic_write(self.path / RUN_INFO, json.dumps({**info, "status": "running"}, indent=2, default=str))
        _atomic_write(self.path / "config.yaml", config_yaml)

    def recorded(self) -> dict[str, dict]:
        """Samples already recorded by any rank of an earlier, interrupted attempt, by id
        (a line cut short by a crash is ignored)."""
        out: dict[str, dict] = {}
        for part in sorted(self.path.glob("results.partial*.jsonl")):
            for line in part.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "id" in rec:
                    out[str(rec["id"])] = rec
        return out

    def append(self, record: dict) -> None:
        """Write one sample's record and flush it to the OS."""
        if self._file is None:
            self._file = open(self.partial_file, "a", encoding="utf-8")
        self._file.write(_json_line(record))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self, records: list[dict], metrics_doc: dict, info: dict) -> None:
        """Main rank: the ordered results, then metrics.json, then drop the partial files."""
        self.close()
        _atomic_write(self.path / RESULTS, "".join(_json_line(r) for r in records))
        _atomic_write(self.path / METRICS, json.dumps(metrics_doc, indent=2, sort_keys=True, default=str))
        _atomic_write(self.path / RUN_INFO, json.dumps({**info, "status": "finished"}, indent=2, default=str))
        for part in self.path.glob("results.partial*.jsonl"):
            part.unlink()

    def metrics(self) -> Any:
        return json.loads((self.path / METRICS).read_text())
