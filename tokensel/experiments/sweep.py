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
    selector_params:               # parameters of one selector only, added to its points
      fastv: {layer: 1}            # (values may interpolate the point's config: ${budget.k})
    cache_inputs: false            # true: each batch's processor output computed once for all points
    points:                        # extra points after the grid (dotted keys -> one value each)
      - {selector.name: mmtok, budget.k: null, budget.adaptive.k_max: 64, budget.adaptive.coverage: 0.999}

Parameters a selector does not take (``alpha`` for DivPrune) are dropped for that selector, and
points whose effective configuration is the same run once; ``selector.name: none`` ignores
``budget.k``. Every point is validated (and its dataset loaded) before anything runs.

Locally every point runs in this process, one run folder and W&B run each, under
``<output_dir>/<name>/``. A rerun skips the points already finished (found by their run key, a
hash of the effective configuration; a skipped run recorded by another tokensel version or
commit is named on stderr), resumes an interrupted one where it stopped, and rebuilds
the summary (table, ``summary.json``, plots with error bars, a W&B summary run) from every
finished run of the folder; ``--force`` reruns the points from scratch.

Scale-out without W&B: ``--shard i/N`` (``0 <= i < N``) runs the points ``j`` with
``j % N == i`` (no summary), and ``--summarize`` runs nothing and builds the summary from every
finished run (naming the points not finished yet). With W&B: ``--export-wandb FILE`` writes a
sweep definition whose one parameter ``point`` enumerates the same deduplicated points; each
agent runs ``tokensel sweep SWEEP_CONFIG point=<j>`` from the installed package.
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

from tokensel.experiments.config import ConfigError, _omegaconf_error, read_yaml, resolve_config_path

__all__ = [
    "SweepSpec",
    "SweepPoint",
    "load_sweep",
    "expand_points",
    "select_shard",
    "parse_shard",
    "run_sweep",
    "summarize_sweep",
    "summary_rows",
    "export_wandb_sweep",
    "series_keys",
    "main",
]

#: Metrics of the summary table by default; each is shown with its ``_stderr`` when recorded.
DEFAULT_SUMMARY_METRICS = ["accuracy", "pope_f1", "mean_kept_tokens", "prefill_ms", "selection_ms"]
#: The cost ledger's entries every summary row carries when the run recorded them
#: (:mod:`tokensel.experiments.ledger`).
LEDGER_SUMMARY_METRICS = ["mean_equivalent_tokens", "flops_total", "lm_prefill_ms", "peak_memory_mb"]


@dataclass
class SweepSpec:
    name: str = "sweep"
    #: Experiment config the points override (relative paths: to the sweep file).
    base: str = "???"
    overrides: List[str] = field(default_factory=list)
    grid: Dict[str, List[Any]] = field(default_factory=dict)
    #: Extra points run after the grid's (each: dotted config keys -> one value), e.g. adaptive
    #: budgets beside a fixed-k grid; crossed with the seeds like the grid's points.
    points: List[Dict[str, Any]] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [0])
    #: Selector name -> parameters added to that selector's points only (e.g. the placement of
    #: an in-LLM selector in a small model); a value may interpolate the point's config, as
    #: ``schedule: ["${budget.k}"]``.
    selector_params: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: Memoise the processor's output of each batch across the points of this process
    #: (:class:`tokensel.experiments.input_cache.CachedProcessor`); changes no number.
    cache_inputs: bool = False
    #: Keys shown in the summary table besides the grid keys.
    summary_metrics: List[str] = field(default_factory=lambda: list(DEFAULT_SUMMARY_METRICS))
    #: Run only this point (its index among the deduplicated points, as ``--dry-run`` lists
    #: them): how the agents of an exported W&B sweep run their point.
    point: Optional[int] = None


@dataclass
class SweepPoint:
    overrides: Dict[str, Any]
    label: str
    #: Run key of the point's effective configuration.
    key: str = ""


def _yaml_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, str) and "${" in v:
        return f"'{v}'"  # an interpolation: quoted, or YAML reads the braces as a mapping
    return str(v)


def _selector_overrides(spec: DictConfig, values: dict, base_name: Optional[str]) -> list[str]:
    """``selector.params.*`` overrides from ``spec.selector_params`` for the point's selector."""
    name = values.get("selector.name", base_name)
    extra = OmegaConf.to_container(spec.selector_params, resolve=False).get(name) or {}
    return [f"selector.params.{key}={_yaml_value(value)}" for key, value in extra.items()]


def load_sweep(path: str | os.PathLike, overrides: list[str] = ()) -> tuple[DictConfig, Path]:
    """The sweep spec and the resolved path of its base config."""
    path = resolve_config_path(path, "sweep")
    loaded = read_yaml(path, "sweep config file")
    try:
        spec = OmegaConf.merge(OmegaConf.structured(SweepSpec), loaded)
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc, str(path)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if overrides:  # grid.<axis>=[...] replaces that axis; mappings replace, never merge
        from tokensel.experiments.sweep_overrides import apply_sweep_overrides

        spec = apply_sweep_overrides(spec, list(overrides), str(path))
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
    for j, point in enumerate(spec.points):
        if not OmegaConf.is_dict(point) or len(point) == 0:
            raise ConfigError(f"points[{j}]: must be a non-empty mapping of dotted config keys to values")
    return spec, base


def _point_values(spec: DictConfig) -> list[dict]:
    """The grid's combinations (in order; the base config alone for an empty grid without
    ``points``), then the extra ``points``, each crossed with the seeds."""
    keys = list(spec.grid.keys())
    value_lists = [list(OmegaConf.to_container(spec.grid[k], resolve=True)) for k in keys]
    combos = [] if spec.points and not keys else [dict(zip(keys, c)) for c in itertools.product(*value_lists)]
    combos += [dict(OmegaConf.to_container(p, resolve=True)) for p in spec.points]
    return [{**values, "eval.seed": seed} for values in combos for seed in spec.seeds]


def _label(cfg: DictConfig, values: dict) -> str:
    from tokensel.experiments.config import effective_selector_params
    from tokensel.experiments.records import is_unpruned

    if is_unpruned(cfg):
        label = "none (unpruned)"
    else:
        from tokensel.experiments.config import budget_label

        label = f"{cfg.selector.name} " + (f"k={cfg.budget.k}" if cfg.budget.k is not None else budget_label(cfg))
        label += "".join(f" {k}={v}" for k, v in sorted(effective_selector_params(cfg).items()) if v is not None)
    label += "".join(f" {k}={v}" for k, v in values.items() if not _is_selector_key(k))
    return label + f" seed={cfg.eval.seed}"


def _is_selector_key(key: str) -> bool:
    return key.startswith("selector.") or key in ("budget.k", "eval.seed")


def expand_points(spec: DictConfig, base: Path) -> list[tuple[SweepPoint, Any]]:
    """Every distinct point of the grid x seeds as (point, Prepared), in grid order; points
    with the same effective configuration (run key) appear once. All are validated (and
    their datasets loaded) before anything runs."""
    from tokensel.experiments.runner import prepare

    out: list = []
    seen: set = set()
    fixed = list(spec.overrides) + [f"logging.group={spec.name}"]
    base_name = read_yaml(base).get("selector", {}).get("name") if spec.selector_params else None
    for values in _point_values(spec):
        # lenient params: grid values a selector does not take are dropped for it
        point_list = fixed + [f"{k}={_yaml_value(v)}" for k, v in values.items()] + ["selector.strict_params=false"]
        point_list += _selector_overrides(spec, values, base_name)
        try:
            prepared = prepare(str(base), point_list)
        except ConfigError as exc:
            raise ConfigError(f"sweep point {values}: {exc}") from None
        key = prepared.key
        if key in seen:
            continue
        seen.add(key)
        out.append((SweepPoint(overrides=values, label=_label(prepared.cfg, values), key=key), prepared))
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected i/N with integers (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard: expected i/N with 0 <= i < N, got {text!r}")
    return i, n


def select_shard(points: list, shard: Optional[tuple[int, int]]) -> list:
    """The points of shard ``(i, N)``: those at positions ``j % N == i`` (all without a shard)."""
    if shard is None:
        return list(points)
    i, n = shard
    return [p for j, p in enumerate(points) if j % n == i]


def _point_only(spec: DictConfig, points: list) -> list:
    if spec.point is None:
        return points
    if not 0 <= int(spec.point) < len(points):
        raise ConfigError(f"point: must be in 0..{len(points) - 1} (the sweep has {len(points)} points), got {spec.point}")
    return [points[int(spec.point)]]


def _dotted(data: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _row(spec: DictConfig, doc: dict, run_dir: Path) -> dict:
    """A summary row from a finished run's metrics.json (its effective config and metrics)."""
    from tokensel.experiments.config import budget_label

    cfg = doc.get("config") or {}
    row: dict = {"selector": _dotted(cfg, "selector.name"), "k": _dotted(cfg, "budget.k")}
    if isinstance(cfg.get("budget"), dict):
        row["budget"] = budget_label(OmegaConf.create({"budget": cfg["budget"]}))
    for key, value in (_dotted(cfg, "selector.params") or {}).items():
        if value is not None:
            row[key] = value
    row["seed"] = _dotted(cfg, "eval.seed")
    for key in spec.grid:
        if not _is_selector_key(key):
            row[key] = _dotted(cfg, key)
    for m in spec.summary_metrics:
        row[m] = doc.get(m)
        if f"{m}_stderr" in doc:
            row[f"{m}_stderr"] = doc[f"{m}_stderr"]
    for m in LEDGER_SUMMARY_METRICS:  # the cost ledger's headline (the x axes of the cost plots)
        if doc.get(m) is not None:
            row.setdefault(m, doc[m])
    row["run_dir"] = str(run_dir)
    return row


def _finished_runs(folder: Path) -> list[tuple[dict, dict, Path]]:
    """(run.json, metrics.json, folder) of every finished run directly under ``folder``; a
    finished run whose files are damaged is left out and named on stderr."""
    from tokensel.experiments.rundir import RunDir, finished_problems, read_run_info

    out = []
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        info = read_run_info(run_dir)
        if info is None or not (run_dir / "metrics.json").exists():
            continue
        problems = finished_problems(run_dir)
        if problems:
            print(f"tokensel sweep: warning: left out of the summary, damaged: {'; '.join(problems)} "
                  "(a rerun of the sweep redoes it)", file=sys.stderr)
            continue
        out.append((info, RunDir(run_dir).metrics(), run_dir))
    return out


def summary_rows(spec: DictConfig, folder: Path, points: list) -> tuple[list[dict], list[SweepPoint]]:
    """Rows of every finished run in the sweep folder (the points of ``points`` first, in
    grid order, then any other finished run) and the points not finished yet."""
    from tokensel.experiments.records import config_key

    runs = _finished_runs(folder)
    by_key = {info.get("key"): (doc, path) for info, doc, path in runs}
    keys = {point.key for point, _ in points}
    configs = {config_key(prepared.cfg) for _, prepared in points}
    old_data = [path for info, _, path in runs if info.get("config_key") in configs and info.get("key") not in keys]
    if old_data:
        print(f"tokensel sweep: left out of the summary: {len(old_data)} run(s) of a sweep point computed from "
              f"an earlier version of its data (e.g. {old_data[0]})", file=sys.stderr)
    runs = [run for run in runs if run[2] not in old_data]
    rows, missing, used = [], [], set()
    for point, _ in points:
        if point.key in by_key:
            doc, path = by_key[point.key]
            rows.append(_row(spec, doc, path))
            used.add(point.key)
        else:
            missing.append(point)
    rows += [_row(spec, doc, path) for info, doc, path in runs if info.get("key") not in used]
    return rows, missing


def _check_budgets(points: list, loaded: Any) -> None:
    """Before any point of this model runs: no point's k may keep every vision token."""
    from tokensel.experiments.config import budget_args
    from tokensel.experiments.records import is_unpruned
    from tokensel.experiments.runner import image_token_count

    for point, prepared in points:
        if is_unpruned(prepared.cfg):
            continue
        n = image_token_count(loaded, prepared.samples[0])
        if n is not None and isinstance(budget_args(prepared.cfg)[0], int) and prepared.cfg.budget.k >= n:
            raise ConfigError(
                f"sweep point {point.overrides}: budget.k: k={prepared.cfg.budget.k} keeps all {n} vision tokens "
                f"of an image of model {prepared.cfg.model.name!r}; choose k < {n}"
            )


_CODE_KEYS = ("tokensel_version", "tokensel_git_commit")


def _other_code(finished: list[Path]) -> list[Path]:
    """The finished run folders whose record names another tokensel (version or git commit)
    than the one running now: their numbers are reused as they are, so the sweep says so."""
    from tokensel.experiments.records import environment
    from tokensel.experiments.rundir import RunDir

    now = {key: environment().get(key) for key in _CODE_KEYS}
    other = []
    for path in finished:
        env = RunDir(path).metrics().get("environment") or {}
        if any(env.get(key) != value for key, value in now.items()):
            other.append(path)
    return other


def _warn_other_code(finished: list[Path]) -> None:
    other = _other_code(finished)
    if other:
        print(f"tokensel sweep: warning: {len(other)} of the {len(finished)} finished runs skipped were produced "
              f"by another tokensel version or commit (e.g. {other[0]}); their numbers are reused as they are: "
              "--force reruns them", file=sys.stderr)


def _run_points(points: list, force: bool, dist, cache_inputs: bool = False) -> dict[str, str]:
    """Run (or skip) each point; returns what happened per run key. ``cache_inputs``: the
    processor outputs are memoised for as long as a model stays loaded."""
    from tqdm.auto import tqdm

    from tokensel.experiments.modeling import load_model
    from tokensel.experiments.runner import find_run, run_eval

    status: dict[str, str] = {}
    todo, finished = [], []
    for point, prepared in points:
        found, path = find_run(prepared)
        if found == "finished" and not force:
            status[point.key] = "skipped (finished)"
            finished.append(path)
        else:
            todo.append((point, prepared))
            status[point.key] = "ran" if force else {"partial": "resumed", "damaged": "redone (damaged)"}.get(found, "ran")
    if finished and dist.is_main:
        _warn_other_code(finished)
    models: dict[str, Any] = {}

    def run(point: SweepPoint, prepared: Any, mode: str) -> None:
        key = OmegaConf.to_yaml(prepared.cfg.model)
        if key not in models:
            models.clear()
            models[key] = load_model(prepared.cfg.model)
            if cache_inputs:
                from tokensel.experiments.input_cache import CachedProcessor

                models[key].processor = CachedProcessor(models[key].processor)
            _check_budgets([p for p in todo if OmegaConf.to_yaml(p[1].cfg.model) == key], models[key])
        result = run_eval(prepared, loaded=models[key], dist=dist, print_results=False, mode=mode)
        if result.extra.get("skipped"):
            status[point.key] = "finished by another process"
        elif status[point.key] == "ran" and result.extra.get("resumed_samples"):
            n = len(prepared.samples)
            status[point.key] = f"data changed: {n - result.extra['resumed_samples']} of {n} recomputed"

    deferred = []
    for point, prepared in tqdm(todo, desc="sweep", disable=not dist.is_main or not todo, dynamic_ncols=True):
        lock = _try_lock(prepared) if dist.is_main else None
        if not dist.broadcast(None if not dist.is_main else lock is not None):
            deferred.append((point, prepared))
            continue
        try:
            run(point, prepared, "force" if force else "reuse")
        finally:
            if lock is not None:
                lock.release()
    for point, prepared in deferred:  # run by another process meanwhile: wait, then reuse or resume it
        run(point, prepared, "reuse")
    return status


def _try_lock(prepared: Any) -> Any:
    """The point's run lock, or None (named on stderr) when another process holds it: that
    process is running the point, which this sweep comes back to after its others."""
    from tokensel.experiments.locking import LockHeld, RunLock
    from tokensel.experiments.runner import _run_parent

    try:
        return RunLock(_run_parent(prepared.cfg), prepared.key).acquire(wait=False)
    except LockHeld as held:
        print(f"tokensel sweep: {held.holder} is running the point {prepared.key} in this output folder; "
              "coming back to it after the other points", file=sys.stderr)
        return None


def series_keys(spec: DictConfig) -> list[str]:
    """Summary-row columns of the swept parameters besides the selector, the budget and the
    seed (``selector.params.alpha`` -> ``alpha``): the plots draw one series per value."""
    keys = []
    for key in spec.grid:
        if key.startswith("selector.params."):
            keys.append(key[len("selector.params."):])
        elif not _is_selector_key(key) and not key.startswith("budget."):
            keys.append(key)
    return keys


def summarize_sweep(spec: DictConfig, points: list, print_results: bool = True) -> list[dict]:
    """Build the summary from every finished run of the sweep folder: table (printed and in
    ``summary.txt``), ``summary.json``, plots of accuracy and POPE F1 against k
    (``<metric>_vs_k.png``) and against the mean of kept tokens (``<metric>_vs_mean_kept.png``:
    fixed-k curves and adaptive points on one axis), with error bars, and a W&B summary run
    logging the table and the plots."""
    import json

    from tokensel.experiments.runner import _run_parent
    from tokensel.experiments.tables import format_table
    from tokensel.experiments.tracking import WandbRun

    cfg0 = points[0][1].cfg
    out_dir = _run_parent(cfg0)
    rows, missing = summary_rows(spec, out_dir, points)
    metric_cols = [c for m in spec.summary_metrics for c in (m, f"{m}_stderr")]
    cols = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "run_dir" and k not in metric_cols]
    cols += [c for c in metric_cols if any(c in r for r in rows)]
    table = format_table(rows, cols, title=f"\nsweep {spec.name}: {len(rows)} finished runs")
    if missing:
        table += f"\n\n{len(missing)} point(s) not finished yet:\n" + "\n".join(f"  {p.label}" for p in missing)
    if print_results:
        print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.txt").write_text(table + "\n")
    (out_dir / "summary.json").write_text(json.dumps(rows, indent=2, default=str))
    if not rows:
        return rows
    run = WandbRun(
        mode=cfg0.logging.wandb_mode,
        project=cfg0.logging.project,
        entity=cfg0.logging.entity,
        group=spec.name,
        name=f"{spec.name}-summary",
        config={"sweep": OmegaConf.to_container(spec, resolve=False)},
        directory=out_dir / "summary",
        job_type="sweep-summary",
    )
    try:
        if run.active:
            run.log_table("summary", cols, [[r.get(c) for c in cols] for r in rows])
        from tokensel.experiments.plots import X_KEYS, metric_figure

        for metric in ("accuracy", "pope_f1"):
            if not any(r.get(metric) is not None for r in rows):
                continue
            for x in ("k", "mean_kept", "flops", "prefill_ms"):
                if x in ("flops", "prefill_ms") and not any(r.get(X_KEYS[x]) is not None for r in rows):
                    continue
                fig = metric_figure(rows, [metric], x=x, metric_keys=spec.summary_metrics,
                                    series_keys=series_keys(spec))
                fig.savefig(out_dir / f"{metric}_vs_{x}.png", dpi=120, bbox_inches="tight")
                run.log_image(f"{metric}_vs_{x}", out_dir / f"{metric}_vs_{x}.png")
    finally:
        run.finish()
    return rows


def run_sweep(
    spec: DictConfig,
    base: Path,
    print_results: bool = True,
    *,
    force: bool = False,
    shard: Optional[tuple[int, int]] = None,
    points: Optional[list] = None,
) -> list[dict]:
    """Run the sweep's points locally (the model is loaded once per distinct model config),
    skipping finished points unless ``force``; with ``shard`` only that share and no summary.
    Returns the summary rows of every finished run (grid order first); with a shard or a
    single ``point``: the rows of the points it ran. ``points``: the result of
    :func:`expand_points` when the caller has it already."""
    from tokensel.experiments.dist import init_distributed

    if points is None:
        points = expand_points(spec, base)  # validates everything first
    mine = select_shard(_point_only(spec, points), shard)
    dist = init_distributed(points[0][1].cfg.eval.dist_backend)
    try:
        status = _run_points(mine, force, dist, cache_inputs=bool(spec.cache_inputs))
    finally:
        dist.close()
    if not dist.is_main:
        return []
    if print_results:
        for point, _ in mine:
            print(f"{status[point.key]:<20} {point.label}")
    if shard is not None or spec.point is not None:
        from tokensel.experiments.runner import _run_parent

        out_dir = _run_parent(points[0][1].cfg)
        keys = {p.key for p, _ in mine}
        rows, _ = summary_rows(spec, out_dir, [(p, x) for p, x in points if p.key in keys])
        return rows[: len(mine)]
    return summarize_sweep(spec, points, print_results=print_results)


def _relative_or_absolute(path: Path, cwd: Path) -> str:
    """``path`` relative to ``cwd`` when it is inside it, else absolute."""
    try:
        arg = os.path.relpath(path.resolve(), cwd.resolve())
    except ValueError:  # another drive
        return str(path.resolve())
    return str(path.resolve()) if arg.startswith("..") else arg


def export_wandb_sweep(spec: DictConfig, base: Path, out: str | os.PathLike, sweep_file: str | os.PathLike,
                       cwd: Path | None = None) -> dict:
    """Write a W&B sweep definition (YAML) that runs the same deduplicated points as the local
    sweep: one grid parameter ``point`` (0..P-1); each agent runs
    ``tokensel sweep SWEEP_FILE point=<j>``, a command of the installed package. Returns it."""
    import yaml

    points = expand_points(spec, base)
    cwd = Path.cwd() if cwd is None else cwd
    if not Path(sweep_file).is_file():  # a shipped config's name: agents find it the same way
        sweep_arg = str(sweep_file)
    else:
        sweep_arg = _relative_or_absolute(Path(sweep_file), cwd)
    definition = {
        "name": spec.name,
        "description": "points: " + "; ".join(f"{j}: {p.label}" for j, (p, _) in enumerate(points)),
        "program": "tokensel",
        "method": "grid",
        "metric": {"name": "accuracy", "goal": "maximize"},
        "parameters": {"point": {"values": list(range(len(points)))}},
        "command": ["${env}", "tokensel", "sweep", sweep_arg, "${args_no_hyphens}"],
    }
    Path(out).write_text(yaml.safe_dump(definition, sort_keys=False))
    return definition


def main(argv: list[str] | None = None) -> int:
    """``tokensel sweep``; errors become one line on stderr and a non-zero exit code."""
    from tokensel.experiments.guard import guarded

    return guarded("sweep", _main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="tokensel sweep",
        description="Run a grid of evaluations locally, or export it as a W&B sweep definition.",
    )
    ap.add_argument("sweep_config", help="a sweep YAML file, or the name of a shipped one (tokensel configs lists them)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the sweep spec (e.g. seeds=[0,1], point=3)")
    ap.add_argument("--export-wandb", metavar="FILE", help="write a W&B sweep YAML instead of running")
    ap.add_argument("--dry-run", action="store_true", help="validate and list the points (with their status), run nothing")
    ap.add_argument("--force", action="store_true", help="rerun finished points from scratch")
    ap.add_argument("--shard", metavar="i/N", help="run only the points j with j %% N == i (0 <= i < N); no summary")
    ap.add_argument("--summarize", action="store_true", help="run nothing: build the summary from every finished run")
    args = ap.parse_args(argv)
    spec, base = load_sweep(args.sweep_config, args.overrides)
    shard = parse_shard(args.shard) if args.shard else None
    if args.export_wandb:
        export_wandb_sweep(spec, base, args.export_wandb, args.sweep_config)
        print(f"wrote {args.export_wandb}; start it with:\n  wandb sweep {args.export_wandb}\n  wandb agent <entity/project/sweep_id>")
        return 0
    if args.dry_run or args.summarize:
        from tokensel.experiments.runner import find_run

        points = expand_points(spec, base)
        if args.summarize:
            summarize_sweep(spec, points)
            return 0
        for j, (point, prepared) in enumerate(points):
            print(f"{j:>3}  {find_run(prepared)[0]:<9} {point.label}")
        return 0
    run_sweep(spec, base, force=args.force, shard=shard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
