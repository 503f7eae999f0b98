"""W&B unreachable while an API key is set (``wandb_mode: auto`` goes online): a real
``tokensel eval`` finishes with exit 0, writes one warning line and an offline run, and the
reachability probe answers within its timeout for a refused port and for a host that accepts
connections but never answers."""

from __future__ import annotations

import socket
import sys
import threading
import time

import pytest
from exp_helpers import TINY
from fault_helpers import cli_env, run

from tokensel.experiments.tracking import find_offline_runs, wandb_reachable


@pytest.fixture
def closed_port():
    """A local port bound but not listening: connections to it are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def silent_port():
    """A local port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held: list = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


def test_an_unreachable_wandb_never_fails_or_blocks_a_finished_eval(dataset, tmp_path, closed_port):
    out = tmp_path / "runs"
    env = cli_env(WANDB_API_KEY="a" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port}",
                  WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"), NETRC=str(tmp_path / "no-netrc"))
    args = [sys.executable, "-m", "tokensel.experiments.cli", "eval", TINY, f"dataset.path={dataset}",
            f"logging.output_dir={out}", "eval.progress=false", "logging.num_overlays=0", "dataset.limit=3"]
    proc = run(args, env=env, timeout=150)  # an init waiting for the service took ~95 s, then exit 1
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "W&B is unreachable" in line]
    assert len(warnings) == 1
    (offline,) = find_offline_runs(out)
    assert f"127.0.0.1:{closed_port}" in warnings[0] and f"logged offline to {offline}" in warnings[0]
    assert f"wandb sync {offline}" in warnings[0]
    assert f"W&B (offline): {offline}" in proc.stdout
    assert list(offline.glob("run-*.wandb"))


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_the_probe_answers_within_its_timeout(monkeypatch, request, kind):
    port = request.getfixturevalue(f"{kind}_port")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    t0 = time.monotonic()
    problem = wandb_reachable(timeout=1.0)
    took = time.monotonic() - t0
    assert problem is not None and f"http://127.0.0.1:{port}" in problem
    assert ("timed out" in problem) == (kind == "silent")
    assert took < 30  # bounded by the timeout (generous: shared CPU), not by the OS's TCP retries


def test_the_probe_accepts_any_http_answer(monkeypatch):
    """A service that answers, even with an error status, is reachable."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API names it
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_port}")
        for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(var, raising=False)
        assert wandb_reachable(timeout=5.0) is None
    finally:
        server.shutdown()
        server.server_close()
