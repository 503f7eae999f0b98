"""``tokensel bench --peers``: facility-location maximisation against apricot and submodlib.

On the same random similarity matrices (``S = max(0, X X^T)`` for ``n`` unit vectors in 64
dimensions, float64, made exactly symmetric (:func:`mirror_lower`), so rows and columns may be
read either way) it times, one solver after the other in one run: tokensel's ``naive``, ``lazy`` and ``stochastic`` solvers
(:func:`tokensel.maximize` on a :class:`~tokensel.objectives.FacilityLocation`), apricot's
``FacilityLocationSelection`` (``metric="precomputed"``) and submodlib's
``FacilityLocationFunction`` (``mode="dense"``) with the matching optimisers. It checks that the
exact solvers' picks equal tokensel's ``naive`` picks and reports each stochastic solver's value
against tokensel's (all stochastic solvers use the same ``eps = 0.01``, that is
``ceil((n / k) log(1 / eps))`` samples per step). Each library is optional (``pip install
tokensel[peers]``): a missing one is skipped with a message, its columns left empty.

Each peer call runs in a worker process of its own (spawned, so that OpenMP and numba state
is not forked; it shares the matrix through shared memory, not a copy, and warms every
solver up before any timed call) under a time cap (``cap`` seconds, ``--peer-cap``): a call still running at the cap is stopped and reported
as over the cap, never as a time, and the same peer solver is then skipped at the larger sizes
of the run. The default sizes (1000, 3000) take a few minutes; the full table of issue 21 is
``tokensel bench --peers --threads 1 --sizes 1000,3000,5000,10000,20000`` (20,000 tokens: a
3.2 GB float64 matrix; the peers' naive greedies then run over any reasonable cap).
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import time
from typing import Callable

import numpy as np
import torch

import tokensel
from tokensel.objectives import FacilityLocation

__all__ = ["run_peers", "PEERS", "DEFAULT_SIZES"]

DEFAULT_SIZES = (1000, 3000)
DEFAULT_CAP = 60.0
EPS = 0.01
SOLVERS = ("naive", "lazy", "stochastic")
PEERS = {"apricot": "apricot-select", "submodlib": "submodlib-py"}


def similarity(n: int, seed: int = 0) -> np.ndarray:
    """float64 ``[n, n]`` non-negative, exactly symmetric similarities of ``n`` random unit vectors."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, 64, generator=g, dtype=torch.float64), dim=1)
    return mirror_lower((x @ x.T).clamp_(min=0).numpy())


def mirror_lower(S: np.ndarray, panel: int = 512) -> np.ndarray:
    """``S`` (square) made exactly symmetric in place: its upper triangle overwritten by the
    lower one, a panel of rows at a time. ``X X^T`` from a matrix product is symmetric only up
    to rounding; mirrored, every library optimises the same function whether it reads a
    candidate's coverage from a row (apricot, submodlib) or a column (tokensel) of ``S``."""
    n = S.shape[0]
    for r0 in range(0, n, panel):
        r1 = min(r0 + panel, n)
        S[r0:r1, r1:] = S[r1:, r0:r1].T
        block = S[r0:r1, r0:r1]
        upper = np.triu_indices(r1 - r0, 1)
        block[upper] = block.T[upper]
    return S


def fl_value(S: np.ndarray, picks: list[int]) -> float:
    """Facility-location value ``sum_r max_{j in picks} S[r, j]`` in float64."""
    return float(S[:, picks].max(axis=1).sum()) if picks else 0.0


def _tokensel(S: np.ndarray, k: int, solver: str, seed: int) -> list[int]:
    obj = FacilityLocation(torch.from_numpy(S))
    opts = {"eps": EPS, "seed": seed} if solver == "stochastic" else {}
    return tokensel.maximize(obj, k, solver=solver, **opts).indices.tolist()


def _apricot(S: np.ndarray, k: int, solver: str, seed: int) -> list[int]:
    from apricot import FacilityLocationSelection

    kwds = {"epsilon": EPS} if solver == "stochastic" else {}
    sel = FacilityLocationSelection(
        k, metric="precomputed", optimizer=solver, optimizer_kwds=kwds, random_state=seed, verbose=False
    )
    return [int(j) for j in sel.fit(S).ranking]


def _submodlib(S: np.ndarray, k: int, solver: str, seed: int) -> list[int]:
    from submodlib import FacilityLocationFunction

    name = {"naive": "NaiveGreedy", "lazy": "LazyGreedy", "stochastic": "StochasticGreedy"}[solver]
    f = FacilityLocationFunction(n=S.shape[0], mode="dense", sijs=S, separate_rep=False)
    picks = f.maximize(budget=k, optimizer=name, stopIfZeroGain=False, stopIfNegativeGain=False,
                       epsilon=EPS, verbose=False, show_progress=False)
    return [int(j) for j, _ in picks]


RUNNERS: dict[str, Callable[[np.ndarray, int, str, int], list[int]]] = {
    "tokensel": _tokensel, "apricot": _apricot, "submodlib": _submodlib,
}


def available_peers() -> tuple[list[str], list[str]]:
    """``(installed, messages)``: the peer libraries that import here, and one line per missing one."""
    installed, messages = [], []
    for name, package in PEERS.items():
        try:
            importlib.import_module(name)
        except Exception as err:  # an absent or broken install: skipped, never fatal
            messages.append(f"skipping {name}: not importable ({type(err).__name__}: {err}); "
                            f"install it with `pip install {package}` or `pip install tokensel[peers]`")
        else:
            installed.append(name)
    return installed, messages


def _worker(conn, libraries: list[str]) -> None:
    """A peer worker process: warms every library's solvers (first calls compile), then answers
    ``(shm name, n, k, solver, seed, lib)`` requests with ``(seconds, picks)`` until told to stop."""
    from multiprocessing import shared_memory

    warm = similarity(64)
    for lib in libraries:
        for solver in SOLVERS:
            RUNNERS[lib](warm, 4, solver, 0)
    conn.send("ready")
    while (task := conn.recv()) is not None:
        name, n, k, solver, seed, lib = task
        shm = shared_memory.SharedMemory(name=name)
        try:
            S = np.ndarray((n, n), dtype=np.float64, buffer=shm.buf)
            t0 = time.perf_counter()
            picks = RUNNERS[lib](S, k, solver, seed)
            conn.send((time.perf_counter() - t0, picks))
            del S
        finally:
            shm.close()


class PeerWorker:
    """Runs peer calls in a separate (spawned) process, so that a call past the time cap can be
    stopped; the matrix is shared with it, not copied. A stopped worker is replaced on the next
    call (and warms up again, outside any timing)."""

    def __init__(self, libraries: list[str]) -> None:
        self.libraries = libraries
        self.proc = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.libraries), daemon=True)
        self.proc.start()
        child.close()
        if self.conn.recv() != "ready":
            raise RuntimeError("the peer worker did not start")

    def call(self, shm_name: str, n: int, k: int, solver: str, seed: int, lib: str,
             cap: float) -> tuple[float, list[int]] | None:
        """``(seconds, picks)``, or None if the call ran past ``cap`` seconds (it is then stopped)."""
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send((shm_name, n, k, solver, seed, lib))
        try:
            if self.conn.poll(cap):
                seconds, picks = self.conn.recv()
                # an answer may arrive within the wait's granularity after the cap: still over it
                return (seconds, picks) if seconds <= cap else None
        except EOFError:
            raise RuntimeError(f"{lib} {solver} (n={n}, k={k}) died without an answer "
                               f"(exit code {self.proc.exitcode}; out of memory?)") from None
        self.stop()  # still running: stopped (the next call starts a fresh worker)
        return None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join()
            self.proc = None


def shared_similarity(n: int, seed: int = 0):
    """``(shm, S)``: :func:`similarity` computed straight into a shared-memory block."""
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=max(8, n * n * 8))
    S = np.ndarray((n, n), dtype=np.float64, buffer=shm.buf)
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, 64, generator=g, dtype=torch.float64), dim=1)
    out = torch.from_numpy(S)
    torch.matmul(x, x.T, out=out)
    out.clamp_(min=0)
    return shm, mirror_lower(S)


def bench_size(n: int, k: int, libraries: list[str], seed: int = 0, cap: float = DEFAULT_CAP,
               over: dict | None = None, worker: PeerWorker | None = None) -> list[dict]:
    """One row per solver kind: seconds per library, pick equality (exact solvers) and value
    ratios against tokensel. A peer call past ``cap`` seconds is recorded in ``row["over_cap"]``
    (with the cap); ``over`` maps ``(library, solver)`` to the size at which it first went over,
    and such a pair is skipped at later sizes (``row["skipped"]``)."""
    over = {} if over is None else over
    worker = worker if worker is not None or not libraries else PeerWorker(libraries)
    shm, S = shared_similarity(n, seed)
    try:
        return _bench_rows(S, shm.name, n, k, libraries, seed, cap, over, worker)
    finally:
        del S
        shm.close()
        shm.unlink()


def _bench_rows(S, shm_name, n, k, libraries, seed, cap, over, worker) -> list[dict]:
    rows = []
    reference: list[int] | None = None
    for solver in SOLVERS:
        row = {"n": n, "k": k, "solver": solver, "seconds": {}, "value": {}, "same_picks": {},
               "over_cap": {}, "skipped": {}}
        for lib in ["tokensel", *libraries]:
            if (lib, solver) in over:
                row["skipped"][lib] = over[(lib, solver)]
                continue
            if lib == "tokensel":
                t0 = time.perf_counter()
                picks = RUNNERS[lib](S, k, solver, seed)
                result = (time.perf_counter() - t0, picks)
            else:
                result = worker.call(shm_name, n, k, solver, seed, lib, cap)
            if result is None:
                row["over_cap"][lib] = cap
                over[(lib, solver)] = n
                continue
            row["seconds"][lib], picks = result
            row["value"][lib] = fl_value(S, picks)
            if solver == "naive" and lib == "tokensel":
                reference = picks
            if solver != "stochastic":
                row["same_picks"][lib] = picks == reference
        rows.append(row)
    return rows


def _cell(row: dict, lib: str) -> str:
    if lib in row.get("over_cap", {}):
        return f"{'over cap (>' + format(row['over_cap'][lib], 'g') + ' s)':>29}"
    if lib in row.get("skipped", {}):
        return f"{'skipped (over cap at ' + str(row['skipped'][lib]) + ')':>29}"
    ts = row["seconds"]["tokensel"]
    if row["solver"] == "stochastic":
        rel = row["value"]["tokensel"] / row["value"][lib]
        check = f"{'>=' if rel >= 1 else '<'} {rel:.5f}"
    else:
        check = "same" if row["same_picks"][lib] else "DIFFERENT"
    return f" {row['seconds'][lib]:10.3f} {row['seconds'][lib] / ts:6.1f}x {check:>10}"


def print_peer_table(rows: list[dict], libraries: list[str], threads: int) -> None:
    print(f"\nfacility location, S = max(0, X X^T) float64, eps = {EPS} for stochastic; threads = {threads} "
          f"(torch.get_num_threads() = {torch.get_num_threads()}); seconds; ratio = peer / tokensel time")
    head = f"{'n':>6} {'k':>5} {'solver':>10} {'tokensel':>9}"
    for lib in libraries:
        head += f" {lib:>10} {'ratio':>7} {'check':>10}"
    print(head)
    for r in rows:
        line = f"{r['n']:>6} {r['k']:>5} {r['solver']:>10} {r['seconds']['tokensel']:9.3f}"
        print(line + "".join(_cell(r, lib) for lib in libraries))
    print("check: exact solvers: picks equal to tokensel naive's; stochastic: tokensel's value / the peer's")


def run_peers(sizes: list[int], k: int | None, threads: list[int], cap: float = DEFAULT_CAP) -> list[dict]:
    """Run the peer table for each thread count (peer calls capped at ``cap`` seconds); prints
    it and returns all rows."""
    libraries, messages = available_peers()
    for line in messages:
        print(line)
    warm = similarity(64)
    for solver in SOLVERS:  # first calls compile or load kernels: not in the table
        RUNNERS["tokensel"](warm, 4, solver, 0)
    worker = PeerWorker(libraries)  # the peers run (and warm up) in a process of their own
    out = []
    for th in threads:
        torch.set_num_threads(th)
        rows: list[dict] = []
        over: dict = {}
        for n in sizes:
            rows += bench_size(n, k if k is not None else max(1, math.ceil(n / 25)), libraries, cap=cap, over=over,
                               worker=worker)
        print_peer_table(rows, libraries, th)
        out += [{**r, "threads": th} for r in rows]
    worker.stop()
    return out
