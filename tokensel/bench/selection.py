"""``tokensel bench``: MMTok selection speed, measured side by side in one run.

On the same random inputs (D = 4096 projected, d = 1024 encoder features, m = 12 question
tokens) it times, interleaved rep by rep:

* ``tokensel``: the ``mmtok`` selector end to end (features -> indices), with the greedy
  backend ``--backend`` (default ``auto``: the compiled loop on CPU; ``torch``: eager torch);
* ``tokensel_loop``: the same selector called on each image of the batch alone (the same
  inputs, the same work; column ``b/loop``: batched time over loop time, below 1 = batched faster);
* ``reference``: a plain dense MMTok written like the original implementation: normalise,
  build ``[P'; alpha Q']`` by concatenation, and recompute every gain from the full matrix at
  each of the k steps (crop by crop for batched inputs);
* ``matmul``: the single ``V V^T`` product that any MMTok implementation must do;
* the greedy phase alone (coverage matrix given): tokensel's incremental greedy on a prebuilt
  matrix, as ``mmtok`` runs it (indices only), and the reference's greedy phase timed inside
  its end-to-end run (timing it apart, on another matrix, changes its large allocations' cost
  and so its time).

It checks every pick (its gain recomputed in float64 is within 1e-5 of the step's best) and
that tokensel's objective is no lower than the reference's, prints medians, min-max, the
thread count and the ratios, and writes JSON and a plot. Timing follows the rule of
``tokensel eval`` (:mod:`tokensel.experiments.timing`): the process's first call is reported
apart, and each size gets one untimed round before its timed repetitions.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import tokensel
from tokensel.cli_args import device_name, float_above, int_at_least, int_list, size_grid
from tokensel.docstrings import summary
from tokensel.experiments.timing import time_call
from tokensel.objectives.multimodal import multimodal_coverage_matrix
from tokensel.solvers.incremental import BACKENDS, incremental_greedy
from tokensel.workspace import Workspace

GRID = [(1, 576, 16), (1, 576, 32), (1, 576, 64), (1, 1728, 48), (1, 1728, 96), (1, 2880, 80), (1, 2880, 160), (5, 576, 32)]
# the MMTok paper's Table 13 sizes (LLaVA-NeXT: 576 tokens per crop, 1, 3 or 5 crops' worth)
TABLE13 = [(1, 576, 16), (1, 576, 32), (1, 1728, 48), (1, 1728, 96), (1, 2880, 80), (1, 2880, 160)]
# the paper's A6000 selection times (ms) of its Table 13 (appendix B.5: LLaVA-NeXT-7B, one A6000,
# mean of 100 runs), keyed by (input tokens, kept tokens)
PAPER_A6000_MS = {(576, 16): 0.774, (576, 32): 1.267, (1728, 48): 2.247, (1728, 96): 3.862, (2880, 80): 3.733,
                  (2880, 160): 6.417}
D, d, M = 4096, 1024, 12
ALPHA, TAU_TV, TAU_VV = 0.5, 0.02, 0.2


def reference_coverage(z, x, v, alpha=ALPHA, tau_tv=TAU_TV, tau_vv=TAU_VV):
    """The original's coverage matrix for one image: float32 ``[(m + n), n]``."""
    z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    P = torch.softmax(z @ x.T / tau_tv, dim=1) / z.shape[0]
    Q = torch.softmax(v @ v.T / tau_vv, dim=1) / v.shape[0]
    return torch.cat([P, alpha * Q], dim=0)


def reference_greedy(C, k):
    """The original's greedy: all gains recomputed from the full matrix at every step."""
    n = C.shape[1]
    best = torch.zeros(C.shape[0], device=C.device)
    taken = torch.zeros(n, dtype=torch.bool, device=C.device)
    picks = []
    for _ in range(k):
        gains = (C - best[:, None]).clamp(min=0).sum(dim=0)
        gains[taken] = -math.inf
        j = int(gains.argmax())
        picks.append(j)
        taken[j] = True
        best = torch.maximum(best, C[:, j])
    return picks


def reference_mmtok(z, x, v, k, phases: dict | None = None):
    """End to end, crop by crop: ``[B, k]`` sorted indices. ``phases`` collects the seconds
    spent building the coverage matrices ("build") and in the greedy ("greedy")."""
    out = []
    build = greedy = 0.0
    for b in range(x.shape[0]):
        t0 = time.perf_counter()
        C = reference_coverage(z[b], x[b], v[b])
        _sync(x.device)
        t1 = time.perf_counter()
        out.append(sorted(reference_greedy(C, k)))
        build, greedy = build + t1 - t0, greedy + time.perf_counter() - t1
    if phases is not None:
        phases.update(build=build, greedy=greedy)
    return torch.tensor(out)


def check_picks(C, picks, rtol=1e-5):
    """Each pick's float64 gain is within ``rtol`` of the step's best float64 gain."""
    C = C.double()
    best = torch.zeros(C.shape[0], dtype=torch.float64, device=C.device)
    taken = torch.zeros(C.shape[1], dtype=torch.bool, device=C.device)
    for j in picks:
        gains = (C - best[:, None]).clamp(min=0).sum(dim=0)
        gains[taken] = -math.inf
        top = float(gains.max())
        if float(gains[j]) < top - rtol * abs(top):
            return False
        taken[j] = True
        best = torch.maximum(best, C[:, j])
    return True


def value(C, picks):
    return float(C.double()[:, list(picks)].amax(dim=1).sum())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device | None = None):
    """``(seconds, fn())``, timed like ``tokensel eval`` times (``tokensel.experiments.timing``:
    device work included, CUDA synchronised on both ends); ``device`` is accepted for clarity."""
    out, ms = time_call(fn)
    return ms / 1000.0, out


def bench_one(B, n, k, reps, seed=0, backend="auto", device="cpu"):
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, n, D, generator=g).to(device)
    v = torch.randn(B, n, d, generator=g).to(device)
    z = torch.randn(B, M, D, generator=g).to(device)
    sel = tokensel.create_selector("mmtok", alpha=ALPHA, tau_tv=TAU_TV, tau_vv=TAU_VV, backend=backend)
    batch = tokensel.TokenBatch(vision=x, vision_raw=v, text=z)
    C = multimodal_coverage_matrix(z, x, v, alpha=ALPHA, tau_tv=TAU_TV, tau_vv=TAU_VV)
    times = {key: [] for key in ("tokensel", "tokensel_loop", "reference", "matmul", "tokensel_greedy", "reference_greedy")}
    images = [tokensel.TokenBatch(vision=x[b : b + 1], vision_raw=v[b : b + 1], text=z[b : b + 1]) for b in range(B)]
    ours = ref = alone = None
    workspace = Workspace()
    # one untimed round at this size first (buffers, caches): the tables report warm calls,
    # the process's very first call is reported apart (first_call_seconds)
    sel(batch, k=k)
    [sel(image, k=k) for image in images]
    reference_mmtok(z, x, v, k, {})
    incremental_greedy([(C, 1.0)], k, workspace=workspace, with_gains=False, backend=backend)
    for _ in range(reps):
        dt, ours = _time(lambda: sel(batch, k=k).indices, device)
        times["tokensel"].append(dt)
        dt, alone = _time(lambda: torch.cat([sel(image, k=k).indices for image in images]), device)
        times["tokensel_loop"].append(dt)
        phases: dict = {}
        dt, ref = _time(lambda phases=phases: reference_mmtok(z, x, v, k, phases), device)
        times["reference"].append(dt)
        times["reference_greedy"].append(phases["greedy"])
        times["matmul"].append(_time(lambda: [v[b] @ v[b].T for b in range(B)], device)[0])
        times["tokensel_greedy"].append(
            _time(lambda: incremental_greedy([(C, 1.0)], k, workspace=workspace, with_gains=False, backend=backend), device)[0]
        )
    valid = all(
        check_picks(C[b], incremental_greedy([(C[b : b + 1], 1.0)], k, backend=backend)[0][0].tolist()) for b in range(B)
    )
    ratio = min(value(C[b], ours[b].tolist()) / value(C[b], ref[b].tolist()) for b in range(B))
    ours, ref = ours.cpu(), ref.cpu()
    return {
        "B": B, "n": n, "k": k, "device": str(device),
        "paper_a6000_ms": PAPER_A6000_MS.get((n, k)) if B == 1 else None,
        "median": {key: statistics.median(ts) for key, ts in times.items()},
        "min": {key: min(ts) for key, ts in times.items()},
        "max": {key: max(ts) for key, ts in times.items()},
        "identical_to_reference": bool(torch.equal(ours, ref)),
        "loop_identical": bool(torch.equal(ours, alone.cpu())),
        "valid_greedy_picks": valid,
        "objective_ratio_vs_reference": ratio,
    }


def first_call_seconds(backend: str = "auto") -> float:
    """Seconds of the process's first ``mmtok`` call on a small input: with the compiled greedy
    it loads (or, on a fresh install, compiles and caches) the kernel once, a cost no later call
    pays."""
    g = torch.Generator().manual_seed(0)
    batch = tokensel.TokenBatch(
        vision=torch.randn(1, 64, 16, generator=g), vision_raw=torch.randn(1, 64, 8, generator=g),
        text=torch.randn(1, 4, 16, generator=g),
    )
    return _time(lambda: tokensel.create_selector("mmtok", backend=backend)(batch, k=8))[0]


def _fmt_ms(s):
    return f"{1e3 * s:8.1f}"


def print_table(rows, threads, backend="auto", device="cpu"):
    print(f"\ndevice {device}, threads = {threads} (torch.get_num_threads() = {torch.get_num_threads()}), "
          f"greedy backend {backend!r}; times in ms, median [min-max]; paper: the MMTok paper's A6000 figure "
          "(Table 13; n/a: a size not in it)")
    head = (f"{'size':>14} {'tokensel':>20} {'reference':>22} {'matmul':>8} {'speedup':>8} {'ts/mm':>6} "
            f"{'greedy ts':>9} {'greedy ref':>10} {'g-speedup':>9} {'b/loop':>6} {'same':>5} {'valid':>5} {'paper':>6}")
    print(head)
    for r in rows:
        med, lo, hi = r["median"], r["min"], r["max"]
        size = f"{r['B']}x{r['n']}/{r['k']}" if r["B"] > 1 else f"{r['n']}/{r['k']}"
        print(
            f"{size:>14} {_fmt_ms(med['tokensel'])} [{1e3*lo['tokensel']:.0f}-{1e3*hi['tokensel']:.0f}]"
            f" {_fmt_ms(med['reference'])} [{1e3*lo['reference']:.0f}-{1e3*hi['reference']:.0f}]"
            f" {_fmt_ms(med['matmul'])} {med['reference'] / med['tokensel']:7.1f}x {med['tokensel'] / med['matmul']:6.2f}"
            f" {_fmt_ms(med['tokensel_greedy'])} {_fmt_ms(med['reference_greedy'])}"
            f" {med['reference_greedy'] / med['tokensel_greedy']:8.1f}x"
            f" {med['tokensel'] / med['tokensel_loop']:6.2f}"
            f" {str(r['identical_to_reference']):>5} {str(r['valid_greedy_picks']):>5}"
            f" {_paper(r):>6}"
        )


def _paper(row) -> str:
    ms = row.get("paper_a6000_ms")
    return "n/a" if ms is None else f"{ms:.2f}"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (threads, rows) in zip(axes[0], results.items()):
        labels = [f"{r['B']}x{r['n']}/{r['k']}" if r["B"] > 1 else f"{r['n']}/{r['k']}" for r in rows]
        xs = range(len(rows))
        for key, style in (("reference", "o-"), ("tokensel", "s-"), ("matmul", "^--")):
            ax.plot(xs, [1e3 * r["median"][key] for r in rows], style, label=key)
        ax.set_yscale("log")
        ax.set_xticks(list(xs), labels, rotation=45, ha="right")
        ax.set_ylabel("ms (median)")
        ax.set_title(f"MMTok selection, {threads} thread(s)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """``"576/64,5x576/32"`` -> ``[(1, 576, 64), (5, 576, 32)]`` (``B >= 1``, ``1 <= k <= n``)."""
    try:
        return size_grid(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"--sizes: {exc}") from None


def parse_peer_sizes(text: str) -> list[int]:
    """``"1000,5000"`` -> ``[1000, 5000]`` (token counts for ``--peers``)."""
    try:
        sizes = [int(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(f"--sizes with --peers: expected token counts like 1000,5000, got {text!r}") from None
    if any(n < 2 for n in sizes):
        raise ValueError(f"--sizes with --peers: token counts must be >= 2, got {text!r}")
    return sizes


def check_device(device: str, backend: str) -> str | None:
    """The error message for an unusable ``--device``/``--backend`` pair, or None."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return (f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                f"torch.cuda.is_available() is False); run on a machine with a GPU, or use --device cpu")
    if device != "cpu" and backend == "compiled":
        return f"--backend compiled runs on CPU only; use --backend torch (or auto) with --device {device}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokensel bench", description=summary(__doc__))
    parser.add_argument("--threads", type=int_list(1), default=[1, 2],
                        help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--reps", type=int_at_least(1), default=5, help="repetitions per size (default 5)")
    parser.add_argument("--sizes", default=None,
                        help="e.g. 576/64,5x576/32 (default: the full grid; with --device: the paper's Table 13); "
                             "with --peers: token counts, e.g. 1000,3000,5000,10000,20000 (default 1000,3000)")
    parser.add_argument("--out", default="outputs/bench_selection", help="output folder for JSON and plot")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="tokensel's greedy backend (default auto: compiled on CPU, eager torch elsewhere)")
    parser.add_argument("--device", type=device_name(), default=None,
                        help="cpu or cuda: time on this device the paper's Table 13 sizes, beside its A6000 figures")
    parser.add_argument("--peers", action="store_true",
                        help="facility location against apricot and submodlib (naive, lazy, stochastic)")
    parser.add_argument("--k", type=int_at_least(1), default=None, help="with --peers: budget (default ceil(n / 25))")
    parser.add_argument("--peer-cap", type=float_above(0), default=60.0,
                        help="with --peers: seconds a peer library's call may run before it is stopped and "
                             "reported as over the cap (default 60)")
    args = parser.parse_args(argv)
    threads = args.threads
    out = Path(args.out)
    try:
        if args.peers:
            from tokensel.bench.peers import DEFAULT_SIZES, run_peers

            sizes = parse_peer_sizes(args.sizes) if args.sizes else list(DEFAULT_SIZES)
            rows = run_peers(sizes, args.k, threads, cap=args.peer_cap)
            out.mkdir(parents=True, exist_ok=True)
            (out / "bench_peers.json").write_text(json.dumps(rows, indent=1))
            print(f"\nwrote {out / 'bench_peers.json'}")
            return 0
        grid = parse_sizes(args.sizes) if args.sizes else (TABLE13 if args.device else GRID)
    except ValueError as err:
        parser.error(str(err))
    device = args.device or "cpu"
    problem = check_device(device, args.backend)
    if problem:
        print(f"tokensel bench: error: {problem}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    first_call = first_call_seconds(args.backend)
    print(f"first mmtok call in this process (loads a compiled greedy): {first_call:.2f} s; not in the tables")
    results = {}
    for th in threads:
        torch.set_num_threads(th)
        rows = [bench_one(B, n, k, args.reps, backend=args.backend, device=device) for B, n, k in grid]
        results[th] = rows
        print_table(rows, th, args.backend, device)
    (out / "bench_selection.json").write_text(
        json.dumps({"backend": args.backend, "device": device, "first_call_seconds": first_call,
                    **{str(t): r for t, r in results.items()}}, indent=1)
    )
    plot(results, out / "bench_selection.png")
    print(f"\nwrote {out / 'bench_selection.json'} and {out / 'bench_selection.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
