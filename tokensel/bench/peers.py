"""``tokensel bench --peers``: facility-location maximisation against apricot and submodlib.

On the same random similarity matrices (``S = max(0, X X^T)`` for ``n`` unit vectors in 64
dimensions, float64, symmetric, so rows and columns may be read either way) it times, one
solver after the other in one run: tokensel's ``naive``, ``lazy`` and ``stochastic`` solvers
(:func:`tokensel.maximize` on a :class:`~tokensel.objectives.FacilityLocation`), apricot's
``FacilityLocationSelection`` (``metric="precomputed"``) and submodlib's
``FacilityLocationFunction`` (``mode="dense"``) with the matching optimisers. It checks that the
exact solvers' picks equal tokensel's ``naive`` picks and reports each stochastic solver's value
against tokensel's (all stochastic solvers use the same ``eps = 0.01``, that is
``ceil((n / k) log(1 / eps))`` samples per step). Each library is optional (``pip install
tokensel[peers]``): a missing one is skipped with a message, its columns left empty.
"""

from __future__ import annotations

import importlib
import math
import time
from typing import Callable

import numpy as np
import torch

import tokensel
from tokensel.objectives import FacilityLocation

__all__ = ["run_peers", "PEERS", "DEFAULT_SIZES"]

DEFAULT_SIZES = (1000, 2000)
EPS = 0.01
SOLVERS = ("naive", "lazy", "stochastic")
PEERS = {"apricot": "apricot-select", "submodlib": "submodlib-py"}


def similarity(n: int, seed: int = 0) -> np.ndarray:
    """float64 ``[n, n]`` non-negative symmetric similarities of ``n`` random unit vectors."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, 64, generator=g, dtype=torch.float64), dim=1)
    return (x @ x.T).clamp_(min=0).numpy()


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


def bench_size(n: int, k: int, libraries: list[str], seed: int = 0) -> list[dict]:
    """One row per solver kind: seconds per library, pick equality (exact solvers) and value
    ratios against tokensel."""
    S = similarity(n, seed)
    rows = []
    reference: list[int] | None = None
    for solver in SOLVERS:
        row = {"n": n, "k": k, "solver": solver, "seconds": {}, "value": {}, "same_picks": {}}
        for lib in ["tokensel", *libraries]:
            t0 = time.perf_counter()
            picks = RUNNERS[lib](S, k, solver, seed)
            row["seconds"][lib] = time.perf_counter() - t0
            row["value"][lib] = fl_value(S, picks)
            if solver == "naive" and lib == "tokensel":
                reference = picks
            if solver != "stochastic":
                row["same_picks"][lib] = picks == reference
        rows.append(row)
    return rows


def print_peer_table(rows: list[dict], libraries: list[str], threads: int) -> None:
    print(f"\nfacility location, S = max(0, X X^T) float64, eps = {EPS} for stochastic; threads = {threads} "
          f"(torch.get_num_threads() = {torch.get_num_threads()}); seconds; ratio = peer / tokensel time")
    head = f"{'n':>6} {'k':>5} {'solver':>10} {'tokensel':>9}"
    for lib in libraries:
        head += f" {lib:>10} {'ratio':>7} {'check':>10}"
    print(head)
    for r in rows:
        ts = r["seconds"]["tokensel"]
        line = f"{r['n']:>6} {r['k']:>5} {r['solver']:>10} {ts:9.3f}"
        for lib in libraries:
            if r["solver"] == "stochastic":
                rel = r["value"]["tokensel"] / r["value"][lib]
                check = f"{'>=' if rel >= 1 else '<'} {rel:.5f}"
            else:
                check = "same" if r["same_picks"][lib] else "DIFFERENT"
            line += f" {r['seconds'][lib]:10.3f} {r['seconds'][lib] / ts:6.1f}x {check:>10}"
        print(line)
    print("check: exact solvers: picks equal to tokensel naive's; stochastic: tokensel's value / the peer's")


def run_peers(sizes: list[int], k: int | None, threads: list[int]) -> list[dict]:
    """Run the peer table for each thread count; prints it and returns all rows."""
    libraries, messages = available_peers()
    for line in messages:
        print(line)
    warm = similarity(64)
    for lib in ["tokensel", *libraries]:  # first calls compile or load kernels: not in the table
        for solver in SOLVERS:
            RUNNERS[lib](warm, 4, solver, 0)
    out = []
    for th in threads:
        torch.set_num_threads(th)
        rows = []
        for n in sizes:
            rows += bench_size(n, k if k is not None else max(1, math.ceil(n / 25)), libraries)
        print_peer_table(rows, libraries, th)
        out += [{**r, "threads": th} for r in rows]
    return out
