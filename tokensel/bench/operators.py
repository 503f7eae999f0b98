"""``tokensel bench selection``: every registered selector as an operator, at MMTok's Table 13 shapes.

The operator of a selector is the work it adds to a model call, on inputs of LLaVA-NeXT-7B's
sizes (random, seeded): ``N`` vision tokens (576 per crop: 1, 3 or 5 crops' worth, flattened
into one row), the budget ``k``, D = 4096 projected features, d = 1024 encoder features, a
question of m = 12 tokens.

* Vision-stage selectors: ``selector(TokenBatch, k)`` (features -> indices) on a batch holding
  every input any of them reads: ``vision [1, N, D]``, ``vision_raw [1, N, d]``, ``text
  [1, m, D]``, ``cls [1, d]``, ``cls_attention [1, N]``, ``keys [1, N, 64]`` and the grid
  ``(N / 24, 24)``.
* In-LLM selectors (FastV, SparseVLM, DART, PyramidDrop) prune inside a decoder layer; their
  operator is ONE pruning stage as :mod:`tokensel.models._llm` runs it: ``score`` on the
  scoring layer's attention inputs (hidden states ``[1, L, D]`` of a prompt of L = 35 system
  tokens + N image tokens + m question tokens, the layer's q / k projections as D x D weights,
  32 heads of 128, rotary tables), then ``choose`` the stage's count (``schedule(k, N)[0]``) and,
  for SparseVLM, ``recycle`` the pruned tokens. Where the layer's own attention weights could be
  reused, these selectors recompute the rows they need from the projections (as tokensel does:
  the ledger's ``attention_recomputed``), so their time includes two ``L x D x D`` products. A
  method with several stages (SparseVLM, PyramidDrop) runs one per stage, each on fewer tokens.

Times (ms) follow :mod:`tokensel.experiments.timing`: the first call at each shape is reported
apart (JSON ``first_call_ms``), the table shows the median of the warm repetitions. The MMTok
paper's A6000 figures (Table 13) are printed beside MMTok's row: a GPU figure, not comparable to
a CPU one; on CUDA the device is synchronised around every call.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from tokensel.docstrings import summary
from tokensel.experiments.config import ConfigError

__all__ = ["SHAPES", "Shape", "OperatorResult", "bench_operators", "format_operator_table", "main"]

#: The paper's Table 13 shapes (N input tokens, k kept).
SHAPES: tuple[tuple[int, int], ...] = ((576, 16), (576, 32), (1728, 48), (1728, 96), (2880, 80), (2880, 160))
GRID_COLS = 24
PROMPT_BEFORE = 35


@dataclass(frozen=True)
class Shape:
    """The sizes of one benchmark call."""

    n: int
    k: int
    hidden: int = 4096
    raw: int = 1024
    text: int = 12
    heads: int = 32

    @property
    def label(self) -> str:
        return f"{self.n}/{self.k}"


@dataclass
class OperatorResult:
    """One selector at one shape: warm times (ms), the first call's, and tokens it kept."""

    selector: str
    shape: str
    stage: str
    first_call_ms: float | None = None
    warm_ms: list[float] = field(default_factory=list)
    kept: int | None = None
    note: str = ""

    @property
    def median_ms(self) -> float | None:
        if not self.warm_ms:
            return None
        s = sorted(self.warm_ms)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def _vision_batch(shape: Shape, device: torch.device, seed: int) -> Any:
    from tokensel import TokenBatch

    g = torch.Generator().manual_seed(seed)
    n = shape.n

    def rnd(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g).to(device)

    rows = n // GRID_COLS if n % GRID_COLS == 0 else None
    return TokenBatch(vision=rnd(1, n, shape.hidden), vision_raw=rnd(1, n, shape.raw), text=rnd(1, shape.text, shape.hidden),
                      cls=rnd(1, shape.raw), cls_attention=torch.rand(1, n, generator=g).to(device),
                      keys=rnd(1, n, 64), grid=None if rows is None else (rows, GRID_COLS))


def _llm_inputs(shape: Shape, device: torch.device, seed: int) -> tuple[Any, Any, torch.Tensor]:
    """(DecoderLayerInputs, StageSample template fields, hidden) of one prompt."""
    from tokensel.selectors.llm import DecoderLayerInputs

    g = torch.Generator().manual_seed(seed)
    length = PROMPT_BEFORE + shape.n + shape.text
    dim, heads = shape.hidden, shape.heads
    hd = dim // heads
    hidden = torch.randn(1, length, dim, generator=g).to(device)
    qw = (torch.randn(dim, dim, generator=g) / math.sqrt(dim)).to(device)
    kw = (torch.randn(dim, dim, generator=g) / math.sqrt(dim)).to(device)
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(length, dtype=torch.float32)[:, None] * inv[None]
    emb = torch.cat([ang, ang], dim=-1)[None].to(device)
    image = torch.zeros(1, length, dtype=torch.bool, device=device)
    image[0, PROMPT_BEFORE:PROMPT_BEFORE + shape.n] = True
    text = torch.zeros_like(image)
    text[0, PROMPT_BEFORE + shape.n:] = True
    valid = torch.ones_like(image)
    inputs = DecoderLayerInputs.from_weights(hidden, qw, kw, heads, cos=emb.cos(), sin=emb.sin(), key_valid=valid,
                                             image=image, text=text, embeddings=hidden, embeddings_image=image,
                                             embeddings_text=text)
    return inputs, (image[0], valid[0], torch.arange(length, device=device)), hidden[0]


def _llm_selector(name: str, k: int) -> Any:
    """The in-LLM selector ``name`` with one stage (its first) keeping ``k`` by its schedule."""
    from tokensel import create_selector

    if name == "sparsevlm":
        return create_selector(name, layers=[2], schedule=[k])
    return create_selector(name)


def _llm_operator(name: str, shape: Shape, device: torch.device, seed: int) -> Callable[[], int]:
    from tokensel.selectors.llm import StageSample

    sel = _llm_selector(name, shape.k)
    inputs, (image, valid, position), hidden = _llm_inputs(shape, device, seed)
    count = int(sel.schedule(shape.k, shape.n)[0])

    def run() -> int:
        with torch.no_grad():
            scores = sel.score(inputs)
            sample = StageSample(scores=scores[0], image=image, valid=valid, position=position, hidden=hidden)
            kept = sel.choose(sample, count)
            extra = 0
            if name == "sparsevlm":
                img_scores = scores[0][image].float()
                pruned = torch.ones(shape.n, dtype=torch.bool, device=device)
                pruned[kept] = False
                merged, _ = sel.recycle(hidden[image][pruned], img_scores[pruned])
                extra = int(merged.shape[0])
        return int(kept.numel()) + extra

    return run


def _vision_operator(name: str, shape: Shape, device: torch.device, seed: int) -> Callable[[], int]:
    from tokensel import create_selector
    from tokensel.selectors.registry import selector_info

    params = {"seed": seed} if "seed" in selector_info(name).defaults else {}
    sel = create_selector(name, **params)
    batch = _vision_batch(shape, device, seed)

    def run() -> int:
        with torch.no_grad():
            out = sel(batch, k=shape.k)
        return int(out.indices.shape[1]) + int(bool(getattr(out, "leading_cls", False)))

    return run


def _time_operator(run: Callable[[], int], reps: int) -> tuple[float, list[float], int]:
    from tokensel.experiments.timing import time_call

    kept, first = time_call(run)
    run()  # one more untimed warm-up call
    warm = [time_call(run)[1] for _ in range(reps)]
    return first, warm, int(kept)


def bench_operators(selectors: list[str], shapes: list[Shape], *, reps: int = 5, llm_reps: int | None = None,
                    device: str = "cpu", seed: int = 0) -> list[OperatorResult]:
    """Time every selector of ``selectors`` at every shape (see the module docstring); in-LLM
    selectors ``llm_reps`` warm repetitions (default ``reps``)."""
    from tokensel.selectors.registry import selector_info

    dev = torch.device(device)
    out = []
    for name in selectors:
        stage = selector_info(name).stage
        for shape in shapes:
            res = OperatorResult(selector=name, shape=shape.label, stage=stage)
            make = _llm_operator if stage == "llm" else _vision_operator
            try:
                run = make(name, shape, dev, seed)
                res.first_call_ms, res.warm_ms, res.kept = _time_operator(run, llm_reps or reps if stage == "llm" else reps)
            except (ValueError, TypeError) as exc:  # a selector that cannot run at this shape says why
                res.note = f"n/a: {type(exc).__name__}: {exc}"
            out.append(res)
    return out


def _paper_row(shapes: list[Shape]) -> dict:
    from tokensel.bench.selection import PAPER_A6000_MS

    row: dict = {"selector": "mmtok (paper, A6000)"}
    for s in shapes:
        ms = PAPER_A6000_MS.get((s.n, s.k)) if (s.hidden, s.raw) == (4096, 1024) else None
        row[s.label] = "n/a" if ms is None else f"{ms:.3f}"
    return row


def format_operator_table(results: list[OperatorResult], shapes: list[Shape], device: str) -> str:
    """The table: one row per selector, one column per shape ``N/k`` (median warm ms), the paper's
    A6000 row after MMTok's, then what the columns mean."""
    from tokensel.experiments.tables import format_table

    rows: dict[str, dict] = {}
    for r in results:
        row = rows.setdefault(r.selector, {"selector": r.selector, "stage": r.stage})
        ms = r.median_ms
        row[r.shape] = "n/a" if ms is None else f"{ms:.3f}"
    body = []
    for name, row in rows.items():
        body.append(row)
        if name == "mmtok":
            body.append(_paper_row(shapes))
    cols = ["selector", "stage", *[s.label for s in shapes]]
    notes = [r for r in results if r.note]
    head = (f"selection operators on {device}: torch threads = {torch.get_num_threads()} "
            f"(OMP_NUM_THREADS={__import__('os').environ.get('OMP_NUM_THREADS')}); D = {shapes[0].hidden}, "
            f"d = {shapes[0].raw}, m = {shapes[0].text}")
    legend = [
        "columns N/k: N vision tokens in, k kept; cells: median warm time in ms (first call apart: JSON)",
        "stage vision: selector(TokenBatch, k); stage llm: one pruning stage (score from the layer's q/k "
        f"projections on a prompt of {PROMPT_BEFORE} + N + m tokens, then choose; sparsevlm also recycles)",
        "mmtok (paper, A6000): MMTok's Table 13 (LLaVA-NeXT-7B, one A6000 GPU, mean of 100 runs), not a CPU figure",
    ]
    legend += [f"{r.selector} {r.shape}: {r.note}" for r in notes]
    return "\n".join([format_table(body, cols, title=head), *legend])


def _parse_shapes(text: str | None) -> list[tuple[int, int]]:
    if not text:
        return list(SHAPES)
    out = []
    for part in text.split(","):
        try:
            n, k = (int(v) for v in part.split("/"))
        except ValueError:
            raise ConfigError(f"--shapes: expected N/k pairs separated by commas (e.g. 576/16,2880/160), got {part!r}") from None
        if not 1 <= k <= n:
            raise ConfigError(f"--shapes: need 1 <= k <= N, got {part!r}")
        out.append((n, k))
    return out


def _main(argv: list[str]) -> int:
    from tokensel.selectors.registry import list_selectors

    ap = argparse.ArgumentParser(prog="tokensel bench selection", description=summary(__doc__))
    ap.add_argument("--selectors", default=None, help="comma-separated names (default: every registered selector)")
    ap.add_argument("--shapes", default=None, help="N/k pairs (default: the paper's six)")
    ap.add_argument("--hidden", type=int, default=4096, help="projected / LM width D (default 4096)")
    ap.add_argument("--raw", type=int, default=1024, help="encoder width d (default 1024)")
    ap.add_argument("--reps", type=int, default=5, help="warm repetitions of vision-stage selectors (default 5)")
    ap.add_argument("--llm-reps", type=int, default=3, help="warm repetitions of in-LLM selectors (default 3)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", action="append", default=None, choices=["cpu", "cuda"],
                    help="cpu and/or cuda (repeatable; default: cpu, and cuda when present)")
    ap.add_argument("--out", default=None, help="folder for bench_operators.json")
    args = ap.parse_args(argv)
    if args.reps < 1 or args.llm_reps < 1:
        raise ConfigError(f"--reps and --llm-reps must be >= 1, got {args.reps}, {args.llm_reps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    known = list_selectors()
    names = known if args.selectors is None else [s.strip() for s in args.selectors.split(",") if s.strip()]
    unknown = [s for s in names if s not in known]
    if unknown:
        raise ConfigError(f"--selectors: unknown {unknown}; registered: {known}")
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine")
    shapes = [Shape(n, k, hidden=args.hidden, raw=args.raw) for n, k in _parse_shapes(args.shapes)]
    doc: dict = {"threads": torch.get_num_threads(), "shapes": [s.label for s in shapes], "devices": {}}
    for device in devices:
        results = bench_operators(names, shapes, reps=args.reps, llm_reps=args.llm_reps, device=device)
        print(format_operator_table(results, shapes, device) + "\n")
        doc["devices"][device] = [{**r.__dict__, "median_ms": r.median_ms} for r in results]
    if args.out:
        from tokensel.experiments.durable import atomic_write

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "bench_operators.json", json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out / 'bench_operators.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``tokensel bench selection``; bad arguments print one line and exit 2."""
    from tokensel.experiments.guard import guarded

    return guarded("bench selection", _main, list(sys.argv[1:] if argv is None else argv))
