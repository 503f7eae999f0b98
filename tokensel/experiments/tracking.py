"""Weights & Biases logging, with an offline fallback and a reader for offline runs.

Mode rule (``logging.wandb_mode: auto``): if the user set ``WANDB_MODE`` it is respected; else if
an API key is available (``WANDB_API_KEY``, or a netrc entry for the W&B host) runs go online;
else ``WANDB_MODE=offline`` is set and runs are written to ``<run dir>/wandb/offline-run-*``,
which ``wandb sync <dir>`` uploads later.

:func:`read_offline_run` parses a run's ``.wandb`` file (a log of length-prefixed, CRC-checked
blocks holding ``wandb.proto`` ``Record`` messages) back into config, history and summary.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

__all__ = [
    "resolve_wandb_mode",
    "has_wandb_credentials",
    "WandbRun",
    "read_offline_run",
    "find_offline_runs",
    "wait_for_offline_run",
]


def has_wandb_credentials() -> bool:
    """True when an API key is configured locally (no network call)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_wandb_mode(mode: str = "auto") -> str:
    """The W&B mode a run will use; with ``auto`` and no key, sets ``WANDB_MODE=offline``."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return "disabled" if env in ("disabled", "dryrun_disabled") else env
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        return "disabled"
    if has_wandb_credentials():
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    return "offline"


def _clean(value: Any) -> Any:
    """NaN / inf are not JSON: log them as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class WandbRun:
    """A thin wrapper around ``wandb.init`` used by the runners; a no-op when disabled."""

    def __init__(
        self,
        *,
        mode: str,
        project: str,
        name: str,
        config: dict,
        directory: Path,
        entity: Optional[str] = None,
        group: Optional[str] = None,
        tags: Optional[list] = None,
        job_type: str = "eval",
    ) -> None:
        self.mode = resolve_wandb_mode(mode)
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            entity=entity,
            name=name,
            group=group,
            tags=list(tags or []),
            job_type=job_type,
            config=config,
            dir=str(directory),
            mode=self.mode,
            reinit="create_new",
            settings=self._settings(wandb),
        )

    def _settings(self, wandb):
        if self.mode == "offline":  # local files only: skip system metrics and console capture
            return wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True)
        return wandb.Settings(silent=True)

    @property
    def active(self) -> bool:
        return self.run is not None

    @property
    def run_dir(self) -> Optional[Path]:
        return None if self.run is None else Path(self.run.dir).parent

    def log_metrics(self, metrics: dict) -> None:
        if self.run is None:
            return
        clean = {k: _clean(v) for k, v in metrics.items()}
        self.run.log(clean)
        self.run.summary.update(clean)

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.run is None:
            return
        import wandb

        self.run.log({key: wandb.Table(columns=columns, data=[[_clean(v) for v in row] for row in rows])})

    def log_images(self, key: str, images: list, captions: list[str]) -> None:
        if self.run is None or not images:
            return
        import wandb

        self.run.log({key: [wandb.Image(im, caption=c) for im, c in zip(images, captions)]})

    def log_image(self, key: str, path: str | os.PathLike) -> None:
        if self.run is None:
            return
        import wandb

        self.run.log({key: wandb.Image(str(path))})

    def finish(self, timeout: float = 60.0) -> None:
        """Finish the run; offline, also wait until its transaction log is complete on disk
        (wandb-core may still be writing it when ``finish`` returns)."""
        if self.run is None:
            return
        run_dir = self.run_dir
        self.run.finish()
        self.run = None
        if self.mode == "offline" and run_dir is not None:
            wait_for_offline_run(run_dir, timeout=timeout)


# ----------------------------------------------------------------------------- offline reader

_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_REC = struct.Struct("<IHB")  # crc32, length, type
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _iter_payloads(data: bytes):
    ident, magic, version = _HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError("not a W&B transaction log (bad header)")
    pos = _HEADER.size
    pending: list[bytes] = []
    while pos + _REC.size <= len(data):
        space = _BLOCK - pos % _BLOCK
        if space < _REC.size:  # block trailer padding
            pos += space
            continue
        crc, length, rtype = _REC.unpack_from(data, pos)
        if length == 0 and rtype == 0:  # zero padding / preallocated tail
            pos += space
            continue
        start = pos + _REC.size
        chunk = data[start : start + length]
        if len(chunk) < length:
            break  # truncated (run still being written)
        if zlib.crc32(bytes([rtype]) + chunk) & 0xFFFFFFFF != crc:
            raise ValueError(f"CRC mismatch in W&B log at byte {pos}")
        pos = start + length
        if rtype == _FULL:
            yield chunk
        elif rtype == _FIRST:
            pending = [chunk]
        elif rtype == _MIDDLE:
            pending.append(chunk)
        elif rtype == _LAST:
            pending.append(chunk)
            yield b"".join(pending)
            pending = []


def _item_key(item) -> str:
    return "/".join(item.nested_key) if len(item.nested_key) else item.key


def _set(target: dict, item, value) -> None:
    """Store at ``item.key``, or at the nested path ``item.nested_key`` (logged dicts, media)."""
    if len(item.nested_key) > 1:
        for part in item.nested_key[:-1]:
            target = target.setdefault(part, {})
        target[item.nested_key[-1]] = value
    else:
        target[_item_key(item)] = value


def read_offline_run(path: str | os.PathLike) -> dict:
    """Parse an offline run (its directory or its ``.wandb`` file).

    Returns ``{"run_id", "name", "group", "config": {...}, "history": [{...}, ...],
    "summary": {...}}`` with values decoded from JSON.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.wandb"))
        if not files:
            raise FileNotFoundError(f"no .wandb file in {path}")
        path = files[0]
    out: dict = {"run_id": None, "name": None, "group": None, "config": {}, "history": [], "summary": {}}
    for payload in _iter_payloads(path.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run_id"] = rec.run.run_id
            out["name"] = rec.run.display_name
            out["group"] = rec.run.run_group
            for item in rec.run.config.update:
                out["config"][_item_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][_item_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            row: dict = {}
            for item in rec.history.item:
                _set(row, item, json.loads(item.value_json))
            out["history"].append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                _set(out["summary"], item, json.loads(item.value_json))
            for item in rec.summary.remove:
                out["summary"].pop(_item_key(item), None)
    # wandb stores config values as {"value": v, "desc": ...}
    out["config"] = {
        k: (v["value"] if isinstance(v, dict) and "value" in v else v)
        for k, v in out["config"].items()
        if not k.startswith("_wandb")
    }
    return out


def _is_complete(path: Path) -> bool:
    from wandb.proto import wandb_internal_pb2 as pb

    try:
        data = path.read_bytes()
        if len(data) < _HEADER.size:
            return False
        for payload in _iter_payloads(data):
            rec = pb.Record()
            rec.ParseFromString(payload)
            if rec.WhichOneof("record_type") == "exit":
                return True
    except (OSError, ValueError):
        return False
    return False


def wait_for_offline_run(run_dir: str | os.PathLike, timeout: float = 60.0) -> bool:
    """Block until the run's ``.wandb`` log holds its exit record (True) or ``timeout`` passes."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        files = sorted(Path(run_dir).glob("*.wandb"))
        if files and _is_complete(files[0]):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def find_offline_runs(directory: str | os.PathLike) -> list[Path]:
    """Offline run directories under ``directory`` (searched recursively), oldest first."""
    return sorted((p for p in Path(directory).rglob("offline-run-*") if p.is_dir()), key=lambda p: p.name)
