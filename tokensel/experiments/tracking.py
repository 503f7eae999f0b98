"""Weights & Biases logging, with an offline fallback and a reader for offline runs.

Mode rule (``logging.wandb_mode: auto``): if the user set ``WANDB_MODE`` it is respected; else if
an API key is available (``WANDB_API_KEY``, or a netrc entry for the W&B host) runs go online;
else ``WANDB_MODE=offline`` is set and runs are written to ``<run dir>/wandb/offline-run-*``,
which ``wandb sync <dir>`` uploads later.

Online runs never block or fail a finished evaluation: the W&B host (or the proxy that
reaches it) is probed first with a short HTTP request (:func:`wandb_reachable`), ``wandb.init``
gets an ``init_timeout`` (``WANDB_INIT_TIMEOUT`` seconds, default :data:`INIT_TIMEOUT_S`), and
when the service is unreachable or ``init`` fails the run is logged offline instead, with a
one-line warning naming the offline run folder to ``wandb sync`` later.

An offline run folder holds W&B's transaction log ``run-<id>.wandb`` (W&B's own format, read
by ``wandb sync`` alone) and the media logged (``files/media/table/*.table.json``,
``files/media/images/*.png``); :func:`find_offline_runs` lists the folders. The numbers a run
logs are those of the run directory's ``metrics.json`` (see
:func:`tokensel.experiments.runner.wandb_metrics`), and its config is the effective
configuration of ``config.yaml``, flattened (:func:`tokensel.experiments.runner.wandb_config`).
"""

from __future__ import annotations

import math
import netrc
import os
import sys
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

__all__ = [
    "resolve_wandb_mode",
    "has_wandb_credentials",
    "WandbRun",
    "find_offline_runs",
    "wandb_reachable",
    "INIT_TIMEOUT_S",
]

#: Default seconds ``wandb.init`` may take online before the run falls back to offline.
INIT_TIMEOUT_S = 30.0
#: Seconds the reachability probe waits for an answer of the W&B host.
PROBE_TIMEOUT_S = 3.0


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def has_wandb_credentials() -> bool:
    """True when an API key is configured locally (no network call)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(_base_url()).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def wandb_reachable(timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """None when the W&B host of ``WANDB_BASE_URL`` answers an HTTP request (any status: the
    service is there) within ``timeout`` seconds, through the proxy the environment configures
    for it; else why not (one line). A host that accepts connections but never answers (a
    firewall or a proxy that swallows traffic) is unreachable too: ``wandb.init`` would wait for
    it and W&B's service would hold the process at exit."""
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    url = _base_url()
    try:
        urlopen(url, timeout=timeout).close()
    except HTTPError:  # an answer: the service is reachable
        return None
    except (URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no answer from {url} within {timeout:g} s: {reason}"
    return None


def _init_timeout() -> float:
    try:
        value = float(os.environ.get("WANDB_INIT_TIMEOUT", INIT_TIMEOUT_S))
    except ValueError:
        return INIT_TIMEOUT_S
    return value if value > 0 else INIT_TIMEOUT_S


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
        args = dict(project=project, entity=entity, name=name, group=group, tags=list(tags or []),
                    job_type=job_type, config=config, dir=str(directory), reinit="create_new")
        problem = wandb_reachable() if self.mode == "online" else None
        if problem is None:
            try:
                self.run = wandb.init(**args, mode=self.mode, settings=self._settings(wandb))
                return
            except Exception as exc:  # W&B fails in many ways; offline always works
                if self.mode != "online":
                    raise
                problem = f"wandb.init failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        self.mode = "offline"
        self.run = wandb.init(**args, mode="offline", settings=self._settings(wandb))
        print(f"tokensel: warning: W&B is unreachable ({problem}); logged offline to {self.run_dir} "
              f"(upload it later: wandb sync {self.run_dir})", file=sys.stderr)

    def _settings(self, wandb):
        if self.mode == "offline":  # local files only: skip system metrics and console capture
            return wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True)
        return wandb.Settings(silent=True, init_timeout=_init_timeout())

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

    def finish(self) -> None:
        """Finish the run (offline: W&B's service completes its log, at the latest when the
        process exits; ``wandb sync`` uploads it later)."""
        if self.run is None:
            return
        self.run.finish()
        self.run = None


def find_offline_runs(directory: str | os.PathLike) -> list[Path]:
    """Offline run directories under ``directory`` (searched recursively), oldest first."""
    return sorted((p for p in Path(directory).rglob("offline-run-*") if p.is_dir()), key=lambda p: p.name)
