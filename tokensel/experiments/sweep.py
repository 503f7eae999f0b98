"""``tokensel sweep SWEEP_CONFIG [key=value ...]``: a grid of evaluations, run locally or exported.

A sweep config (YAML)::

    name: shapes-ablation          # W&B group and output sub-folder
    base: shapes.yaml              # experiment config, relative to this file
    overrides: [dataset.limit=64]  # fixed overrides for every point
    grid:                          # dotted config keys -> values (cartesian product, in order)
      selector.name: [mmtok, divprune]
      budget.k: [16, 64]
      selector.params.alpha: [0.3, 0.5]
    seeds: [0]                     # eval.seed values (one run per seed per point)

Parameters a selector does not take (``alpha`` for DivPrune) are dropped for that selector, and
points that become identical run once; ``selector.name: none`` ignores ``budget.k``.

Locally (default) every point runs in this process, one W&B run each, grouped under ``name``,
then a summary table is printed and logged (with an accuracy-vs-k plot) in a summary run.

``--export-wandb FILE`` writes a W&B sweep definition instead (``method: grid``, ``parameters``,
``command`` with ``${args_no_hyphens}``) so that ``wandb sweep FILE`` + ``wandb agent ID`` on any
number of machines runs the same runner with ``key=value`` overrides: the scale-out path.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tokensel.experiments.config import ConfigError, _omegaconf_error, parse_overrides

__all__ = ["SweepSpec", "SweepPoint", "load_sweep", "expand_points", "run_sweep", "export_wandb_sweep", "main"]


@dataclass
class SweepSpec:
    name: str = "sweep"
    #: Experiment config the points override (relative paths: to the sweep file).
    base: str = "???"
    overrides: List[str] = field(default_factory=list)
    grid: Dict[str, List[Any]] = field(default_factory=dict)
    seeds: List[int] = field(default_factory=lambda: [0])
    #: Keys shown in the summary table besides the grid keys.
    summary_metrics: List[str] = field(
        default_factory=lambda: ["accuracy", "pope_f1", "mean_kept_tokens", "prefill_ms", "selection_ms"]
    )
    #: For ``--export-wandb``: the script ``wandb agent`` runs.
    program: str = "experiments/evaluate.py"


@dataclass
class SweepPoint:
    overrides: Dict[str, Any]
    label: str

    def as_dotlist(self) -> list[str]:
        return [f"{k}={_yaml_value(v)}" for k, v in self.overrides.items()]


def _yaml_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def load_sweep(path: str | os.PathLike, overrides: list[str] = ()) -> tuple[DictConfig, Path]:
    """The sweep spec and the resolved path of its base config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep config file not found: {str(path)!r}")
    try:
        spec = OmegaConf.merge(OmegaConf.structured(SweepSpec), OmegaConf.load(path))
        if overrides:
            spec = OmegaConf.merge(spec, parse_overrides(list(overrides)))
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc, str(path)) from None
    if OmegaConf.is_missing(spec, "base"):
        raise ConfigError(f"{path}: base: the experiment config to sweep over is required")
    base = Path(spec.base)
    if not base.is_absolute():
        base = path.parent / base
    if not base.is_file():
        raise ConfigError(f"base: experiment config not found: {str(base)!r}")
    if not spec.seeds:
        raise ConfigError("seeds: needs at least one seed")
    for key, values in spec.grid.items():
        if not isinstance(values, (list, tuple)) and not OmegaConf.is_list(values):
            raise ConfigError(f"grid.{key}: must be a list of values")
        if len(values) == 0:
            raise ConfigError(f"grid.{key}: is empty")
    return spec, base


def expand_points(spec: DictConfig, base: Path) -> list[tuple[SweepPoint, Any]]:
    """Every distinct point of the grid x seeds as (point, Prepared); all are validated (and
    their datasets loaded) before anything runs."""
    from tokensel.experiments.config import NO_SELECTOR, effective_selector_params
    from tokensel.experiments.runner import prepare

    keys = list(spec.grid.keys())
    value_lists = [list(OmegaConf.to_container(spec.grid[k], resolve=True)) for k in keys]
    out: list = []
    seen: set = set()
    fixed = list(spec.overrides) + [f"logging.group={spec.name}"]
    for combo in itertools.product(*value_lists, list(spec.seeds)):
        values = dict(zip(keys, combo[:-1]))
        values["eval.seed"] = combo[-1]
        point = dict(values)
        # lenient params: grid values a selector does not take are dropped for it
        point_list = fixed + [f"{k}={_yaml_value(v)}" for k, v in point.items()] + ["selector.strict_params=false"]
        try:
            prepared = prepare(str(base), point_list)
        except ConfigError as exc:
            raise ConfigError(f"sweep point {values}: {exc}") from None
        cfg = prepared.cfg
        params = effective_selector_params(cfg)
        full = cfg.selector.name in NO_SELECTOR or cfg.budget.k is None
        ident = (
            cfg.selector.name if not full else "none",
            None if full else cfg.budget.k,
            tuple(sorted(params.items())) if not full else (),
            cfg.eval.seed,
            tuple((k, str(v)) for k, v in values.items() if not (k.startswith("selector.") or k in ("budget.k", "eval.seed"))),
        )
        if ident in seen:
            continue
        seen.add(ident)
        label = "none (unpruned)" if full else f"{cfg.selector.name} k={cfg.budget.k}"
        label += "".join(f" {k}={v}" for k, v in sorted(params.items())) if not full else ""
        label += "".join(f" {k}={v}" for k, v in ident[4]) + f" seed={cfg.eval.seed}"
        out.append((SweepPoint(overrides=values, label=label), prepared))
    return out


def _summary_row(spec: DictConfig, point: SweepPoint, result, cfg: DictConfig) -> dict:
    from tokensel.experiments.config import effective_selector_params

    full = cfg.selector.name == "none" or cfg.budget.k is None
    row: dict = {"selector": cfg.selector.name, "k": None if full else cfg.budget.k}
    for key, value in effective_selector_params(cfg).items():
        row[key] = value
    row["seed"] = cfg.eval.seed
    for key in point.overrides:
        if not (key.startswith("selector.") or key in ("budget.k", "eval.seed")):
            row[key] = point.overrides[key]
    for m in spec.summary_metrics:
        row[m] = result.metrics.get(m)
    row["run_dir"] = str(result.run_dir) if result.run_dir else None
    return row


def accuracy_vs_k_figure(rows: list[dict], metric: str = "accuracy", metric_keys=()):
    """Matplotlib figure: ``metric`` against k, one line per selector configuration (the
    row's other config columns; ``metric_keys`` names columns that are metrics)."""
    from tokensel.experiments.runner import HEADLINE_METRICS

    skip = {"selector", "k", "run_dir", "seed", metric, *HEADLINE_METRICS, *metric_keys, *_METRIC_KEYS}
    skip |= set(SweepSpec().summary_metrics)
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    lines: dict[str, list] = {}
    full = [r for r in rows if r["k"] is None or r["selector"] == "none"]
    for r in rows:
        if r in full or r.get(metric) is None:
            continue
        extra = ",".join(f"{k}={v}" for k, v in r.items() if k not in skip)
        lines.setdefault(r["selector"] + (f" ({extra})" if extra else ""), []).append((r["k"], r[metric]))
    for label, pts in sorted(lines.items()):
        by_k: dict = {}
        for kk, v in pts:  # mean over seeds
            by_k.setdefault(kk, []).append(v)
        ks = sorted(by_k)
        ax.plot(ks, [sum(by_k[kk]) / len(by_k[kk]) for kk in ks], marker="o", label=label)
    for r in full:
        if r.get(metric) is not None:
            ax.axhline(r[metric], color="grey", linestyle="--", label="unpruned")
            break
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (vision tokens kept)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


_METRIC_KEYS: set = set()


def run_sweep(spec: DictConfig, base: Path, print_results: bool = True) -> list[dict]:
    """Run every point locally (the model is loaded once per distinct model config); returns
    the summary rows (config + metrics + run directory) in grid order."""
    from tqdm.auto import tqdm

    from tokensel.experiments.dist import init_distributed
    from tokensel.experiments.modeling import load_model
    from tokensel.experiments.runner import run_eval
    from tokensel.experiments.tables import format_table
    from tokensel.experiments.tracking import WandbRun

    points = expand_points(spec, base)  # validates everything first
    _METRIC_KEYS.update(spec.summary_metrics)
    dist = init_distributed(points[0][1].cfg.eval.dist_backend)
    models: dict[str, Any] = {}
    rows: list[dict] = []
    try:
        for point, prepared in tqdm(points, desc=f"sweep {spec.name}", disable=not dist.is_main, dynamic_ncols=True):
            key = OmegaConf.to_yaml(prepared.cfg.model)
            if key not in models:
                models.clear()
                models[key] = load_model(prepared.cfg.model)
            result = run_eval(prepared, loaded=models[key], dist=dist, print_results=False)
            rows.append(_summary_row(spec, point, result, prepared.cfg))
    finally:
        dist.close()
    if not dist.is_main:
        return rows
    metric_cols = list(spec.summary_metrics)
    cols = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "run_dir" and k not in metric_cols]
    cols += metric_cols
    table = format_table(rows, cols, title=f"\nsweep {spec.name}: {len(rows)} runs")
    if print_results:
        print(table)
    cfg0 = points[0][1].cfg
    out_dir = Path(cfg0.logging.output_dir) / spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.txt").write_text(table + "\n")
    import json

    (out_dir / "summary.json").write_text(json.dumps(rows, indent=2, default=str))
    run = WandbRun(
        mode=cfg0.logging.wandb_mode,
        project=cfg0.logging.project,
        entity=cfg0.logging.entity,
        group=spec.name,
        name=f"{spec.name}-summary",
        config={"sweep": OmegaConf.to_container(spec, resolve=True)},
        directory=out_dir / "summary",
        job_type="sweep-summary",
    )
    try:
        if run.active:
            run.log_table("summary", cols, [[r.get(c) for c in cols] for r in rows])
            for metric in ("accuracy", "pope_f1"):
                if any(r.get(metric) is not None for r in rows):
                    fig = accuracy_vs_k_figure(rows, metric, spec.summary_metrics)
                    fig.savefig(out_dir / f"{metric}_vs_k.png", dpi=120)
                    run.log_image(f"{metric}_vs_k", out_dir / f"{metric}_vs_k.png")
    finally:
        run.finish()
    return rows


def export_wandb_sweep(spec: DictConfig, base: Path, out: str | os.PathLike, cwd: Path | None = None) -> dict:
    """Write a W&B sweep definition (YAML) equivalent to the local grid; returns it as a dict."""
    import yaml

    cwd = Path.cwd() if cwd is None else cwd
    try:
        base_arg = os.path.relpath(base.resolve(), cwd.resolve())
    except ValueError:  # another drive
        base_arg = str(base.resolve())
    if base_arg.startswith(".."):
        base_arg = str(base.resolve())
    params: dict = {}
    for key, values in spec.grid.items():
        params[key] = {"values": list(OmegaConf.to_container(values, resolve=True))}
    params["eval.seed"] = {"values": list(spec.seeds)}
    for item in spec.overrides:
        k, v = item.split("=", 1)
        params[k] = {"value": yaml.safe_load(v)}
    params["selector.strict_params"] = {"value": False}
    params["logging.group"] = {"value": spec.name}
    definition = {
        "name": spec.name,
        "program": spec.program,
        "method": "grid",
        "metric": {"name": "accuracy", "goal": "maximize"},
        "parameters": params,
        "command": ["${env}", "${interpreter}", "${program}", base_arg, "${args_no_hyphens}"],
    }
    Path(out).write_text(yaml.safe_dump(definition, sort_keys=False))
    return definition


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="tokensel sweep",
        description="Run a grid of evaluations locally, or export it as a W&B sweep definition.",
    )
    ap.add_argument("sweep_config", help="sweep YAML (see experiments/configs/sweeps/)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the sweep spec (e.g. seeds=[0,1])")
    ap.add_argument("--export-wandb", metavar="FILE", help="write a W&B sweep YAML instead of running")
    ap.add_argument("--dry-run", action="store_true", help="validate and list the points, run nothing")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        spec, base = load_sweep(args.sweep_config, args.overrides)
        if args.export_wandb:
            expand_points(spec, base)  # validate every point
            export_wandb_sweep(spec, base, args.export_wandb)
            print(f"wrote {args.export_wandb}; start it with:\n  wandb sweep {args.export_wandb}\n  wandb agent <entity/project/sweep_id>")
            return 0
        if args.dry_run:
            for point, prepared in expand_points(spec, base):
                print(point.label)
            return 0
        run_sweep(spec, base)
    except ConfigError as exc:
        print(f"tokensel sweep: config error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
