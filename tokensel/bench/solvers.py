"""``tokensel bench solvers``: stochastic vs lazy greedy on random facility-location instances, side by side.

    OMP_NUM_THREADS=1 tokensel bench solvers [--sizes 3000:100 5000:200] [--reps 3]

Prints, per (n, k): best-of-reps seconds of ``maximize(..., solver="lazy")`` and
``solver="stochastic"`` (default eps=0.01, seed=0), their ratio, and the value ratio.
The matrix is C = max(0, x x^T) for n random unit vectors in 64 dimensions.
"""

from __future__ import annotations

import argparse
import time

import torch

import tokensel
from tokensel.cli_args import int_at_least, n_k_pairs
from tokensel.docstrings import summary
from tokensel.objectives import FacilityLocation


def best_of(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokensel bench solvers", description=summary(__doc__))
    parser.add_argument("--sizes", nargs="+", type=n_k_pairs, default=[(3000, 100), (5000, 200)], help="n:k pairs")
    parser.add_argument("--reps", type=int_at_least(1), default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'n':>6} {'k':>5} {'lazy s':>9} {'stoch s':>9} {'stoch/lazy':>11} {'value ratio':>12}")
    for n, k in args.sizes:
        x = torch.nn.functional.normalize(torch.randn(n, 64, generator=torch.Generator().manual_seed(0)), dim=1)
        obj = FacilityLocation((x @ x.T).clamp_min(0))
        lazy = best_of(lambda obj=obj, k=k: tokensel.maximize(obj, k, solver="lazy"), args.reps)
        stoch = best_of(lambda obj=obj, k=k: tokensel.maximize(obj, k, solver="stochastic"), args.reps)
        ratio = tokensel.maximize(obj, k, solver="stochastic").value / tokensel.maximize(obj, k, solver="lazy").value
        print(f"{n:>6} {k:>5} {lazy:>9.3f} {stoch:>9.3f} {stoch / lazy:>11.2f} {ratio:>12.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
