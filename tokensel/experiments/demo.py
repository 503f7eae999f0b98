"""``tokensel demo``: every registered selector on the embedded shapes-llava model.

    tokensel demo [--model shapes-llava] [--num-samples 300] [--out tokensel-demo] [--seed 0] [--threads N]

The demo is a shipped sweep config (``tokensel/experiments/configs/demo_sweep.yaml`` over
``demo.yaml``) run by the same runner as ``tokensel sweep`` and ``tokensel eval``, then a
report (:mod:`tokensel.experiments.report`). The sweep: the first ``--num-samples`` questions
of the held-out test split of the synthetic shapes VQA (existence questions with the three POPE
negative-sampling modes, colour and counting questions), answered by the shipped
``shapes-llava`` model (offline) with all 576 vision tokens and with every registered selector
at k in {4, 8, 16, 32, 64, 128}. Everything in the table comes from running the model; a cell
equals what ``tokensel eval`` reports for the run's ``config.yaml``.

In-LLM selectors (fastv, sparsevlm, dart, pyramiddrop) need decoder layers to score and prune
at. The default ``shapes-llava`` has 2, so the sweep config places them to fit (its
``selector_params``): FastV and DART with K = 1 (score with layer 0, prune from layer 1),
SparseVLM with one stage (scores with layer 0, prunes from layer 1, keeping k by score plus its
recycled tokens), PyramidDrop with one stage at layer 1. On a model of at least
:data:`RELATIVE_DEPTH_FROM` decoder layers (``--model shapes-llava-deep``, 8 layers) every one runs
at its original's relative depth instead (:data:`RELATIVE_PLACEMENTS`: layer l of 32 ->
``floor(l n / 32 + 1/2)``, :mod:`tokensel.selectors.placement`; FastV and DART K = 2 -> 1,
SparseVLM 2/6/15 -> 1/2/4, PyramidDrop 8/16/24 -> 2/4/6 on 8 layers). The table's notes and
``results.json`` (``notes``, ``mean_llm_image_tokens``) state the placements.

Scoring (``eval.scoring: choice``): the answer is the candidate word of the question's category
(yes/no, colour names, digits) with the largest next-token logit after ``ASSISTANT:``. Metrics
per cell (:mod:`tokensel.experiments.metrics`): accuracy, POPE F1 over the yes/no questions
("yes" is the positive class), each with a standard error and a 95% bootstrap interval, and the
relative score: the mean of accuracy and F1, each as a percentage of the full-token value.

Speed: the sweep config sets ``cache_inputs: true``, so each batch's processor output is computed
once for all points (:mod:`tokensel.experiments.input_cache`; it changes no number).

Outputs in ``--out``: ``runs/demo/<run>/`` (one run folder per point; a rerun skips the finished
ones and resumes an interrupted one), the sweep summary beside them, and the report:
``results.csv`` / ``results.json``, ``accuracy_vs_k.png``, ``accuracy_vs_mean_kept.png``,
``accuracy_vs_flops.png`` and ``accuracy_vs_prefill_ms.png`` (against the cost ledger's analytic
FLOPs and warm LM prefill time) and ``kept_tokens.png`` (the tokens each selector keeps on the
same few test images). Every run folder holds the cost ledger of each question
(:mod:`tokensel.experiments.ledger`); the console shows it at k = 16 and 64.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from tokensel.cli_args import int_at_least, int_list
from tokensel.docstrings import summary

__all__ = ["main", "run_demo", "demo_sweep", "DEMO_SWEEP", "DEFAULT_BUDGETS", "RELATIVE_PLACEMENTS",
           "RELATIVE_DEPTH_FROM"]

#: The shipped sweep config of the demo.
DEMO_SWEEP = Path(__file__).resolve().parent / "configs" / "demo_sweep.yaml"
DEFAULT_BUDGETS = (4, 8, 16, 32, 64, 128)

#: The in-LLM selectors at their originals' relative depths (the ``relative_layer(s)``
#: resolvers of :mod:`tokensel.experiments.placement`; the run's config.yaml holds the placed
#: numbers). SparseVLM keeps k by score at each of its three stages (the original's keep tables
#: are for 576 tokens at budgets 64 / 96 / 128 / 192 only), plus its recycled tokens.
RELATIVE_PLACEMENTS: dict[str, dict] = {
    "fastv": {"layer": "${relative_layer:${model.name},2}"},
    "dart": {"layer": "${relative_layer:${model.name},2}"},
    "sparsevlm": {"layers": "${relative_layers:${model.name},[2,6,15]}",
                  "schedule": ["${budget.k}", "${budget.k}", "${budget.k}"]},
    "pyramiddrop": {"layer_list": "${relative_layers:${model.name},[8,16,24]}", "ratios": [0.5, 0.25, 0.125]},
}
#: The smallest decoder depth where every one of :data:`RELATIVE_PLACEMENTS` fits its method
#: (FastV's and DART's K = 2 of 32 is layer 0 below 8 layers).
RELATIVE_DEPTH_FROM = 8


def demo_sweep(
    out: str | Path = "tokensel-demo",
    *,
    num_samples: Optional[int] = None,
    budgets: Optional[Sequence[int]] = None,
    selectors: Optional[Sequence[str]] = None,
    seed: Optional[int] = None,
    batch_size: Optional[int] = None,
    wandb_mode: Optional[str] = None,
    num_overlays: Optional[int] = None,
    model: Optional[str] = None,
):
    """The demo's sweep spec and base config path: :data:`DEMO_SWEEP` with the options given
    (None keeps the config's value). The data file and the run folders go under ``out``. The
    in-LLM selectors take :data:`RELATIVE_PLACEMENTS` when the model has at least
    :data:`RELATIVE_DEPTH_FROM` decoder layers, else the sweep config's fitted placements."""
    from omegaconf import OmegaConf

    from tokensel.experiments.config import ConfigError
    from tokensel.experiments.placement import decoder_depth
    from tokensel.experiments.sweep import load_sweep

    spec, base = load_sweep(DEMO_SWEEP)
    cfg = OmegaConf.load(base)
    name = str(cfg.model.name if model is None else model)
    try:
        depth = decoder_depth(name)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--model: {exc}") from None
    n = int(cfg.dataset.limit if num_samples is None else num_samples)
    if n < 1:
        raise ConfigError(f"--num-samples: must be >= 1, got {n}")
    out = Path(out)
    overrides = [f"dataset.path={out / 'data' / f'shapes-test-{n}' / 'data.jsonl'}", f"dataset.limit={n}",
                 f"dataset.generate_images={n}", f"logging.output_dir={out / 'runs'}"]
    if model is not None:
        overrides.append(f"model.name={model}")
    for key, value in (("eval.batch_size", batch_size), ("logging.wandb_mode", wandb_mode),
                       ("logging.num_overlays", num_overlays)):
        if value is not None:
            overrides.append(f"{key}={value}")
    changes: dict = {"overrides": list(spec.overrides) + overrides}
    if budgets is not None:
        changes["grid"] = {"budget.k": [int(k) for k in budgets]}
    if selectors is not None:
        changes.setdefault("grid", {})["selector.name"] = ["none"] + [s for s in selectors if s != "none"]
        changes["points"] = [p for p in OmegaConf.to_container(spec.points) if p.get("selector.name") in selectors]
    if seed is not None:
        changes["seeds"] = [int(seed)]
    spec = OmegaConf.merge(spec, OmegaConf.create(changes))
    if depth >= RELATIVE_DEPTH_FROM:  # replaces the fitted placements (a merge would keep their keys)
        spec.selector_params = {**OmegaConf.to_container(spec.selector_params, resolve=False), **RELATIVE_PLACEMENTS}
    return spec, base


def run_demo(out: str | Path = "tokensel-demo", *, force: bool = False, print_status: bool = False,
             **options) -> tuple[dict, list[dict]]:
    """Run the demo's sweep (finished points are skipped unless ``force``) and build the
    report: ``(results document, summary rows of the points)``; ``options`` are those of
    :func:`demo_sweep`. Writes the run folders and the sweep summary, not the report files;
    ``print_status`` lists what ran and what was skipped."""
    from tokensel.experiments.report import build_report
    from tokensel.experiments.runner import _run_parent, find_run
    from tokensel.experiments.sweep import expand_points, run_sweep, summary_rows
    from tokensel.experiments.timing import time_call

    spec, base = demo_sweep(out, **options)
    points = expand_points(spec, base)
    todo = sum(force or find_run(prepared)[0] != "finished" for _, prepared in points)
    _, ms = time_call(run_sweep, spec, base, print_results=False, force=force, points=points)
    if print_status:
        print(f"{len(points)} points: {todo} run, {len(points) - todo} skipped (finished before)")
    rows, missing = summary_rows(spec, _run_parent(points[0][1].cfg), points)
    if missing:  # pragma: no cover - run_sweep finishes every point or raises
        raise RuntimeError(f"{len(missing)} demo point(s) did not finish: {[p.label for p in missing]}")
    rows = rows[: len(points)]
    cfg = points[0][1].cfg
    from tokensel.experiments.placement import decoder_depth

    res = build_report(rows, num_decoder_layers=decoder_depth(cfg.model.name), model=cfg.model.name,
                       seed=int(spec.seeds[0]))
    res["seconds"] = round(ms / 1000.0, 1)
    return res, rows


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tokensel demo", description=summary(__doc__))
    ap.add_argument("--model", default=None,
                    help="zoo model or checkpoint folder (default shapes-llava; shapes-llava-deep: 8 decoder layers, "
                         "the in-LLM selectors at their originals' relative depths)")
    ap.add_argument("--num-samples", type=int_at_least(1), default=None, help="test questions (default 300)")
    ap.add_argument("--out", default="tokensel-demo", help="output folder (default ./tokensel-demo)")
    ap.add_argument("--seed", type=int_at_least(0), default=None, help="eval.seed (seed of randomised selectors; default 0)")
    ap.add_argument("--budgets", type=int_list(1), default=None, help="comma-separated k values (default 4,8,16,32,64,128)")
    ap.add_argument("--selectors", default=None, help="comma-separated selector names (default: all registered)")
    ap.add_argument("--batch-size", type=int_at_least(1), default=None, help="questions per model call (default 32)")
    ap.add_argument("--picture-k", type=int_at_least(1), default=16, help="budget shown in kept_tokens.png (nearest in the table)")
    ap.add_argument("--examples", type=int_at_least(0), default=None, help="examples in kept_tokens.png (default 4)")
    ap.add_argument("--threads", type=int_at_least(0), default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--wandb", default=None, choices=["disabled", "offline", "online", "auto"],
                    help="W&B logging of every run and the summary (default: disabled)")
    ap.add_argument("--force", action="store_true", help="rerun finished points from scratch")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="do not list what ran and what was skipped")
    return ap.parse_args(argv)


def _main(argv: list[str]) -> int:
    args = _parse(argv)
    import torch

    from tokensel.experiments.report import format_report, kept_tokens_picture, write_csv, write_plots

    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = args.budgets
    selectors = None if args.selectors is None else [s.strip() for s in args.selectors.split(",") if s.strip()]
    res, rows = run_demo(args.out, force=args.force, print_status=not args.quiet, num_samples=args.num_samples, budgets=budgets,
                         selectors=selectors, seed=args.seed, batch_size=args.batch_size, wandb_mode=args.wandb,
                         num_overlays=args.examples, model=args.model)
    out = Path(args.out)
    paths = {"csv": write_csv(res, out / "results.csv"), "json": out / "results.json"}
    paths["json"].write_text(json.dumps(res, indent=2))
    print(format_report(res))
    if not args.no_plots:
        paths.update(write_plots(rows, res, out))
        picture = kept_tokens_picture(res, args.picture_k, out / "kept_tokens.png")
        if picture is not None:
            paths["tokens"] = picture
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    print(f"total {res['seconds']:.0f} s (run folders: {out / 'runs'}; a rerun skips the finished ones)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``tokensel demo``; errors become one line on stderr and a non-zero exit code."""
    from tokensel.experiments.guard import guarded

    return guarded("demo", _main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
