"""A run's folder: found by name and run key, written sample by sample, finished atomically.

Layout of ``<output_dir>/[<group>/]<name>[-N]/``:

* ``run.json``: the run key (with its parts: ``config_key``, the hash of the effective config,
  and ``data_fingerprint``, the hash of the samples' content), status (``running`` /
  ``finished``), effective config, environment;
* ``config.yaml``: the effective configuration (a valid config);
* ``results.partial[.rankR].jsonl``: one line per sample, appended, flushed and fsynced as each
  is produced (a crash loses nothing; a resumed run first cuts a line the crash left
  incomplete, says so, and continues after the recorded samples);
* ``results.jsonl`` and ``metrics.json``: written when the run ends (``metrics.json`` last, so
  its presence means the run is finished); the partial files are then removed.

Every whole-file write is atomic and durable (:func:`tokensel.experiments.durable.atomic_write`).
A finished run whose ``metrics.json`` or ``results.jsonl`` is damaged (cut, empty, invalid: what
a power loss can leave) is ``damaged``: it is redone, keeping its intact records, and the
damage is named (file and line) on stderr; reading it as finished raises
:class:`~tokensel.experiments.durable.RunDirError` naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import IO, Any, Optional

from tokensel.experiments.durable import RunDirError, atomic_write, read_json, read_records, repair_tail

__all__ = ["RunDir", "RunDirError", "locate_run", "read_run_info", "finished_problems", "runs_of_other_data"]

RUN_INFO = "run.json"
METRICS = "metrics.json"
RESULTS = "results.jsonl"
#: Intact records of a damaged finished run, kept while it is redone.
SALVAGED = "results.partial.salvaged.jsonl"
#: Records of a run of the same configuration on an earlier version of the data whose
#: sample inputs are unchanged, reused by the new run (see :meth:`RunDir.seed`).
REUSED = "results.partial.reused.jsonl"


#: Damaged run.json files named already by this process (each is named once).
_NAMED: set[str] = set()


def read_run_info(path: Path) -> Optional[dict]:
    """``run.json`` of the folder ``path``, or None when it is missing or unreadable. A
    run.json that exists but is damaged (cut, empty, invalid) is named on stderr, once: the
    folder cannot be matched to its run key, so it is never reused (nor emptied) and a run
    that needs it is computed in a new folder."""
    try:
        return read_json(Path(path) / RUN_INFO)
    except RunDirError as exc:
        if (Path(path) / RUN_INFO).exists() and str(exc) not in _NAMED:
            _NAMED.add(str(exc))
            _say(f"warning: {exc}: the run folder {path} cannot be matched to its configuration and "
                 "is left as it is (not reused); remove it or repair its run.json")
        return None


def finished_problems(path: Path) -> list[str]:
    """What is wrong with the finished run folder ``path`` (``file[:line]: what``); empty when
    its ``metrics.json`` is a JSON object and every line of ``results.jsonl`` a record."""
    problems = []
    try:
        read_json(path / METRICS)
    except RunDirError as exc:
        problems.append(str(exc))
    if not (path / RESULTS).is_file():
        problems.append(f"{path / RESULTS}: missing")
    else:
        read = read_records(path / RESULTS)
        problems += read.problems
        if not read.records and not read.problems:
            problems.append(f"{path / RESULTS}: empty")
    return problems


def locate_run(parent: Path, name: str, key: str) -> tuple[str, Path]:
    """Where the run with ``key`` named ``name`` lives under ``parent``: ``("finished", dir)``,
    ``("damaged", dir)`` (finished, but its metrics or results are cut or invalid: see
    :func:`finished_problems`), ``("partial", dir)`` (started, not finished) or ``("new", dir)``
    (the first of ``name``, ``name-1``, ... that does not exist: create it with
    :func:`tokensel.experiments.locking.make_new_dir`, another process may take it first)."""
    n = 0
    while True:
        path = parent / (name if n == 0 else f"{name}-{n}")
        if not path.exists():
            return "new", path
        info = read_run_info(path)
        if info is not None and info.get("key") == key:
            if not (path / METRICS).exists():
                return "partial", path
            return ("damaged" if finished_problems(path) else "finished"), path
        n += 1


def runs_of_other_data(parent: Path, name: str, config_key: str, key: str) -> list[Path]:
    """Folders ``name``, ``name-1``, ... under ``parent`` of the same effective configuration
    (``config_key``) computed from other data (another run key): what a changed dataset
    leaves behind."""
    out, n = [], 0
    while True:
        path = parent / (name if n == 0 else f"{name}-{n}")
        if not path.exists():
            return out
        info = read_run_info(path) or {}
        if info.get("config_key") == config_key and info.get("key") != key:
            out.append(path)
        n += 1


def _json_line(record: dict) -> str:
    return json.dumps(record, default=str) + "\n"


def _empty(folder: Path) -> None:
    """Remove what ``folder`` holds but keep the folder itself: removing and recreating it would
    let another process take its name in between (see :func:`~tokensel.experiments.locking.make_new_dir`)."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _say(message: str) -> None:
    print(f"tokensel: {message}", file=sys.stderr)


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

    def _partials(self) -> list[Path]:
        return sorted(self.path.glob("results.partial*.jsonl"))

    def start(self, info: dict, config_yaml: str, fresh: bool) -> None:
        """Main rank: create the folder (emptied first when ``fresh``), write run.json and
        config.yaml. A resumed folder first has its partial files' cut tails repaired and the
        intact records of a damaged finished run kept (see the module docstring)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if fresh:
            _empty(self.path)
        if not fresh:
            for part in self._partials():
                repair_tail(part)
            self._salvage()
        for stale in (METRICS, RESULTS):
            (self.path / stale).unlink(missing_ok=True)
        for tmp in self.path.glob(".*.tmp"):  # an atomic write a crash interrupted
            tmp.unlink(missing_ok=True)
        atomic_write(self.path / RUN_INFO, json.dumps({**info, "status": "running"}, indent=2, default=str))
        atomic_write(self.path / "config.yaml", config_yaml)

    def _salvage(self) -> None:
        """A damaged finished run: its intact ``results.jsonl`` records become a partial file
        (kept until the redone run finishes), and the damage is named."""
        if not (self.path / METRICS).exists():
            return
        problems = finished_problems(self.path)
        if not problems:
            return
        kept: list[dict] = []
        if (self.path / RESULTS).is_file():
            kept = read_records(self.path / RESULTS).records
            if kept:
                atomic_write(self.path / SALVAGED, "".join(_json_line(r) for r in kept))
        _say(f"the finished run in {self.path} is damaged ({'; '.join(problems)}); redoing it, "
             f"keeping its {len(kept)} intact sample record(s)")

    def seed(self, records: list[dict]) -> None:
        """Main rank, before :meth:`start` (``fresh=False``) of a new folder: ``records`` (of
        another folder) become a partial file, so the run computes only the other samples."""
        atomic_write(self.path / REUSED, "".join(_json_line(r) for r in records))

    def all_records(self) -> list[dict]:
        """The records of this folder whatever its state: ``results.jsonl`` when the run
        finished intact, else the intact records of its partial files and its results."""
        out = self.recorded() if self._partials() else {}
        if (self.path / RESULTS).is_file():
            out.update({str(r["id"]): r for r in read_records(self.path / RESULTS).records})
        return list(out.values())

    def recorded(self) -> dict[str, dict]:
        """Samples already recorded by any rank of an earlier, interrupted attempt, by id. A
        line that is not a record (cut by a crash, or damaged) is named on stderr and its
        sample recomputed."""
        out: dict[str, dict] = {}
        for part in self._partials():
            read = read_records(part)
            for problem in read.problems:
                _say(f"ignoring {problem}; that sample is recomputed")
            for rec in read.records:
                out[str(rec["id"])] = rec
        return out

    def append(self, record: dict) -> None:
        """Write one sample's record as one line, flushed and fsynced (a line cut by an earlier
        crash is removed first, so the record never lands on a fragment)."""
        if self._file is None:
            repair_tail(self.partial_file)
            self._file = open(self.partial_file, "a", encoding="utf-8")
        self._file.write(_json_line(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self, records: list[dict], metrics_doc: dict, info: dict) -> None:
        """Main rank: the ordered results, then metrics.json, then drop the partial files."""
        self.close()
        atomic_write(self.path / RESULTS, "".join(_json_line(r) for r in records))
        atomic_write(self.path / METRICS, json.dumps(metrics_doc, indent=2, sort_keys=True, default=str))
        atomic_write(self.path / RUN_INFO, json.dumps({**info, "status": "finished"}, indent=2, default=str))
        for part in self._partials():
            part.unlink()

    def metrics(self) -> Any:
        """``metrics.json`` (:class:`RunDirError` naming the file when it is damaged)."""
        return read_json(self.path / METRICS)

    def results(self) -> list[dict]:
        """The records of ``results.jsonl``; :class:`RunDirError` naming the file and line of
        the first damaged line."""
        read = read_records(self.path / RESULTS) if (self.path / RESULTS).is_file() else None
        if read is None:
            raise RunDirError(f"{self.path / RESULTS}: missing")
        if read.problems:
            raise RunDirError(read.problems[0])
        return read.records
