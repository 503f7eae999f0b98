"""The evaluation runner: config -> (validated, dataset loaded) -> model -> metrics + logs.

Everything that can fail because of the config (selector name and parameters, budget, dataset
file, types) is checked in :func:`prepare` before any model is loaded.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from tokensel.experiments.config import (
    ConfigError,
    budget_args,
    budget_label,
    effective_selector_params,
    load_config,
)
from tokensel.experiments.datasets import (
    Dataset,
    DatasetError,
    Sample,
    candidate_answers,
    candidates_for,
    get_dataset,
    load_dataset,
)
from tokensel.experiments.dist import DistContext, init_distributed
from tokensel.experiments.fingerprint import (
    FINGERPRINT_KEY,
    candidates_fingerprint,
    data_fingerprint,
    sample_fingerprint,
)
from tokensel.experiments.ledger import TIME_KEYS, ledger_table, peak_memory, reset_peak_memory, run_ledger
from tokensel.experiments.metrics import is_correct
from tokensel.experiments.tables import results_tables
from tokensel.experiments.tracking import WandbRun

__all__ = [
    "Prepared",
    "prepare",
    "run_eval",
    "EvalResult",
    "default_run_name",
    "find_run",
    "load_finished",
    "image_token_count",
    "HEADLINE_METRICS",
    "headline_metrics",
    "wandb_config",
    "wandb_metrics",
    "RUN_MODES",
]

_HEADLINE_QUALITY = ("accuracy", "pope_f1", "pope_precision", "pope_recall", "pope_yes_ratio")
_HEADLINE_COST = ("mean_kept_tokens", "prefill_ms", "selection_ms", "first_call_prefill_ms", "first_call_selection_ms")


def headline_metrics(dataset: Dataset) -> tuple[str, ...]:
    """The metrics printed first for a run on ``dataset``: the common quality metrics, the
    dataset's ``headline``, then kept tokens and timings."""
    return tuple(dict.fromkeys((*_HEADLINE_QUALITY, *dataset.headline, *_HEADLINE_COST)))


#: The headline metrics of the built-in datasets.
HEADLINE_METRICS = (*_HEADLINE_QUALITY, "mme_score", *_HEADLINE_COST)

TABLE_COLUMNS = ["id", "category", "question", "answer", "prediction", "correct", "kept_tokens", "prefill_ms", "selection_ms",
                 "equivalent_tokens", "flops_total", "lm_prefill_ms"]


@dataclass
class Prepared:
    cfg: DictConfig
    samples: list[Sample]
    selector_params: dict
    #: answer sets per category for ``eval.scoring: choice``
    candidates: dict = field(default_factory=dict)
    #: content hash of the samples and answer sets (:func:`tokensel.experiments.fingerprint.data_fingerprint`)
    data_fp: str = ""

    @property
    def key(self) -> str:
        """The run key: the effective configuration and the content of the samples."""
        from tokensel.experiments.records import run_key

        return run_key(self.cfg, self.data_fp)


@dataclass
class EvalResult:
    metrics: dict
    records: list[dict]
    run_dir: Optional[Path]
    wandb_dir: Optional[Path] = None
    config: Optional[DictConfig] = None
    extra: dict = field(default_factory=dict)


def prepare(config: Any = None, overrides: tuple | list = ()) -> Prepared:
    """Load and validate a config (a path, a DictConfig or None) and its dataset.
    Raises :class:`ConfigError` naming the key; loads no model."""
    if isinstance(config, DictConfig):
        cfg = config
        if overrides:
            cfg = load_config(None, overrides, base=config)
    else:
        cfg = load_config(config, overrides)
    try:
        samples, everything = load_dataset(cfg.dataset, check_images=cfg.eval.check_images, with_all=True)
    except (DatasetError, OSError) as exc:
        raise ConfigError(f"dataset.path: {exc}") from None
    candidates = candidate_answers(everything, cfg.dataset.format) if cfg.eval.scoring == "choice" else {}
    return Prepared(
        cfg=cfg, samples=samples, selector_params=effective_selector_params(cfg, with_seed=True), candidates=candidates,
        data_fp=data_fingerprint(samples, candidates),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-") or "run"


def default_run_name(cfg: DictConfig) -> str:
    ds = cfg.dataset.name or Path(cfg.dataset.path).stem
    from tokensel.experiments.records import is_unpruned

    if is_unpruned(cfg):
        sel = "full"
    else:
        sel = f"{cfg.selector.name}-{budget_label(cfg)}"
        for key, value in sorted(effective_selector_params(cfg).items()):
            if value is not None:
                sel += f"-{key}{value}"
    if cfg.eval.seed:
        sel += f"-s{cfg.eval.seed}"
    return _slug(f"{ds}-{sel}")


def _overlay(image, indices: list[int], num_tokens: int):
    """The image with unkept patches darkened (square patch grid assumed)."""
    import math

    from PIL import Image, ImageDraw

    side = int(round(math.sqrt(num_tokens)))
    if side * side != num_tokens:
        return None
    size = 336
    img = image.resize((size, size)).convert("RGBA")
    shade = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    keep = set(indices)
    step = size / side
    for t in range(num_tokens):
        if t not in keep:
            r, c = divmod(t, side)
            draw.rectangle([c * step, r * step, (c + 1) * step - 1, (r + 1) * step - 1], fill=(0, 0, 0, 150))
    return Image.alpha_composite(img, shade).convert("RGB")


#: ``mode`` of :func:`run_eval`: where a run goes when a run of the same key exists.
RUN_MODES = ("new", "reuse", "force")


def _run_parent(cfg: DictConfig) -> Path:
    parent = Path(cfg.logging.output_dir)
    return parent / _slug(cfg.logging.group) if cfg.logging.group else parent


def find_run(prepared: "Prepared | DictConfig") -> tuple[str, Path]:
    """``(status, folder)`` of this run under its output folder, by run key (config and data):
    ``finished``, ``damaged`` (finished, files cut or invalid), ``partial`` (interrupted) or
    ``new``. Reads only; loads no model (a config alone: its dataset is read for the key)."""
    from tokensel.experiments.rundir import locate_run

    if isinstance(prepared, DictConfig):
        prepared = prepare(prepared)
    cfg = prepared.cfg
    return locate_run(_run_parent(cfg), cfg.logging.run_name or default_run_name(cfg), prepared.key)


def load_finished(cfg: DictConfig, path: Path) -> EvalResult:
    """The :class:`EvalResult` of a finished run folder (metrics, records, config) without
    running; :class:`~tokensel.experiments.durable.RunDirError` naming the file (and line) when
    its ``metrics.json`` or ``results.jsonl`` is damaged."""
    from tokensel.experiments.rundir import RunDir

    doc = RunDir(path).metrics()
    metrics = {k: v for k, v in doc.items() if k not in ("config", "environment")}
    records = RunDir(path).results()
    return EvalResult(metrics=metrics, records=records, run_dir=path, config=cfg, extra={"skipped": True, "doc": doc})


def _choose_dir(prepared: Prepared, mode: str) -> tuple[Path, bool, bool]:
    """Main rank, holding the run key's lock (but in mode ``new``): the run folder (created),
    whether it is started afresh (else: resumed) and whether it is finished already (mode
    ``reuse``: another process finished it meanwhile)."""
    from tokensel.experiments.locking import make_new_dir

    cfg = prepared.cfg
    parent, name = _run_parent(cfg), cfg.logging.run_name or default_run_name(cfg)
    if mode == "new":
        return make_new_dir(parent, name), True, False
    status, path = find_run(prepared)
    if status == "new":
        path = make_new_dir(parent, name)
        return path, not _reuse_other_data(prepared, parent, name, path, mode), False
    if mode == "force":
        return path, True, False
    return path, status not in ("partial", "damaged"), status == "finished"


def _reuse_other_data(prepared: Prepared, parent: Path, name: str, path: Path, mode: str) -> bool:
    """A new run of a configuration that ran on other data (the dataset changed): in mode
    ``reuse``, the records of the latest such run whose sample inputs are unchanged are
    copied to the new folder ``path``, so only the changed and new samples are computed; what
    is recomputed is said on stderr. Returns whether records were reused."""
    from tokensel.experiments.fingerprint import candidates_fingerprint
    from tokensel.experiments.records import config_key
    from tokensel.experiments.rundir import RunDir, read_run_info, runs_of_other_data

    other = [p for p in runs_of_other_data(parent, name, config_key(prepared.cfg), prepared.key) if p != path]
    if not other:
        return False
    total = len(prepared.samples)
    cands = candidates_fingerprint(prepared.candidates)
    if mode != "reuse" or (prepared.candidates and (read_run_info(other[-1]) or {}).get("candidates_fp") != cands):
        why = "--force" if mode == "force" else "a new run" if mode != "reuse" else "the answer sets changed"
        _say(f"the data changed since this configuration ran in {other[-1]}: all {total} samples are "
             f"computed in the new run folder {path} ({why})")
        return False
    fps = {s.id: (sample_fingerprint(s), s) for s in prepared.samples}
    old = {str(r["id"]): r for r in RunDir(other[-1]).all_records()}
    same = [{**old[i], "image": s.image} for i, (fp, s) in fps.items() if i in old and old[i].get(FINGERPRINT_KEY) == fp]
    changed = [i for i in fps if i in old and old[i].get(FINGERPRINT_KEY) != fps[i][0]]
    new = total - len(same) - len(changed)
    example = f" (e.g. {changed[0]!r})" if changed else ""
    _say(f"the data changed since this configuration ran in {other[-1]}: {len(changed)} of the {total} samples "
         f"have other inputs{example} and {new} were not computed there; reusing its {len(same)} records of "
         f"unchanged samples and computing those {total - len(same)} in the new run folder {path}")
    if not same:
        return False
    RunDir(path).seed(same)
    return True


def _say(message: str) -> None:
    print(f"tokensel: {message}", file=sys.stderr)


def _lock_run(prepared: Prepared, mode: str):
    """Main rank: the run key's lock (waiting, and saying so, while another process holds it);
    None in mode ``new`` (a new folder of its own)."""
    from tokensel.experiments.locking import RunLock

    if mode == "new":
        return None

    def waiting(holder: str) -> None:
        print(f"tokensel: waiting for {holder}, which is running this configuration under "
              f"{_run_parent(prepared.cfg)} (run key {prepared.key})", file=sys.stderr)

    return RunLock(_run_parent(prepared.cfg), prepared.key).acquire(wait=True, on_wait=waiting)


def _kept_records(rd: Any, prepared: Prepared) -> list[dict]:
    """The records of an interrupted attempt that still belong to this run: samples of the run
    whose input fingerprint is unchanged; the others are named on stderr and recomputed."""
    import sys

    position = {s.id: i for i, s in enumerate(prepared.samples)}
    fps = {s.id: sample_fingerprint(s) for s in prepared.samples}
    done, changed = [], []
    for rec in rd.recorded().values():
        if rec["id"] not in position:
            continue
        if rec.get(FINGERPRINT_KEY) != fps[rec["id"]]:
            changed.append(rec["id"])
            continue
        done.append({**rec, "_pos": position[rec["id"]]})
    if changed:
        print(f"tokensel: {len(changed)} recorded sample(s) of {rd.path} were computed from other inputs "
              f"(e.g. {changed[0]!r}: its image, question or answer changed); recomputing them", file=sys.stderr)
    return done


def selector_received(wrapper: Any, cfg: DictConfig, params: dict) -> Optional[dict]:
    """The keyword arguments the selector was built with: the model family's defaults (e.g.
    MMTok's ``tau_tv`` for LLaVA) overridden by the config's; None for the unpruned model."""
    if getattr(wrapper, "selector", None) is None:
        return None
    adapter = getattr(wrapper, "adapter", None)
    family: dict = {}
    if adapter is not None:
        from tokensel.models.wrapper import _family_defaults

        family = _family_defaults(adapter, cfg.selector.name)
    return {**family, **params}


def image_token_count(loaded: Any, sample: Sample) -> Optional[int]:
    """Image tokens in the prompt of ``sample`` (all crops of an any-res image), counted from
    the processor's output alone (no forward pass); None when the model has no image token id."""
    from tokensel.experiments.modeling import _encode, load_image

    if loaded.image_token_id is None:
        return None
    inputs = _encode(loaded, load_image(sample.image), sample.question)
    return int((inputs["input_ids"] == loaded.image_token_id).sum())


def _warm_up(loaded, wrapper, prepared: Prepared, timer) -> dict:
    """One untimed-in-the-metrics call on the first batch (it pays the one-off costs: the
    compiled greedy's kernel load, allocator warm-up); returns its times as ``first_call_*``
    and fails when the budget keeps every token (the run would silently be unpruned)."""
    from tokensel.experiments.modeling import infer_batch, load_image

    cfg = prepared.cfg
    chunk = prepared.samples[: int(cfg.eval.batch_size)]
    cands = [candidates_for(s, prepared.candidates) for s in chunk] if cfg.eval.scoring == "choice" else None
    outs = infer_batch(
        loaded, wrapper, [load_image(s.image) for s in chunk], [s.question for s in chunk],
        scoring=cfg.eval.scoring, max_new_tokens=cfg.eval.max_new_tokens, candidates=cands, timer=timer,
    )
    if getattr(wrapper, "selector", None) is not None:
        full = [o for o in outs if o.get("kept_tokens") is not None and o.get("image_tokens")]
        if full and all(o["kept_tokens"] >= o["image_tokens"] for o in full):
            n = full[0]["image_tokens"]
            what = f"budget.k: k={cfg.budget.k}" if cfg.budget.k is not None else f"budget: {budget_label(cfg)}"
            raise ConfigError(
                f"{what} keeps all {n} vision tokens of an image of model "
                f"{cfg.model.name!r}, so the run would be unpruned under a pruned run name; choose k < {n}, "
                "or selector.name=none / budget.k=null for the unpruned model"
            )
    out: dict = {}
    for key in ("prefill_ms", "selection_ms", "generate_ms", *TIME_KEYS):
        vals = [o[key] for o in outs if o.get(key) is not None]
        if vals:
            out[f"first_call_{key}"] = sum(vals) / len(vals)
    return out


def _overlay_positions(samples: list[Sample], n: int) -> set[int]:
    """Positions of the first question of each of the first ``n`` distinct images (the same
    samples in every run on the dataset, so overlays compare side by side)."""
    seen: dict[str, int] = {}
    for pos, s in enumerate(samples):
        if len(seen) >= n:
            break
        seen.setdefault(s.image, pos)
    return set(seen.values())


def _record(pos: int, sample: Sample, out: dict, kept: Optional[list]) -> dict:
    rec = {
        "_pos": pos,
        "id": sample.id,
        FINGERPRINT_KEY: sample_fingerprint(sample),
        "image": sample.image,
        "category": sample.category,
        "question": sample.question,
        "answer": sample.answer,
        **out,
        "correct": is_correct(out["prediction"], sample.answer),
    }
    for key, value in sample.extra.items():
        rec.setdefault(key, value)
    if kept is not None:
        rec["kept_indices"] = kept
    return rec


def _evaluate(prepared: Prepared, loaded, wrapper, timer, todo: list, dist: DistContext, rd) -> list[dict]:
    """Evaluate this rank's share of ``todo`` ((position, sample) pairs), appending each
    record to the run folder as it is produced."""
    from tqdm.auto import tqdm

    from tokensel.experiments.modeling import infer_batch, last_selection, load_image, selection_indices

    cfg = prepared.cfg
    overlays = _overlay_positions(prepared.samples, int(cfg.logging.num_overlays))
    shard = [todo[i] for i in range(dist.rank, len(todo), dist.world_size)]
    bs = int(cfg.eval.batch_size)
    local: list[dict] = []
    with tqdm(
        total=len(shard),
        desc=f"eval {cfg.selector.name} k={cfg.budget.k}" + (f" [rank {dist.rank}]" if dist.enabled else ""),
        disable=not cfg.eval.progress,
        position=dist.rank if dist.enabled else None,
        leave=dist.is_main,
        dynamic_ncols=True,
    ) as bar:
        for start in range(0, len(shard), bs):
            chunk = shard[start : start + bs]
            cands = [candidates_for(s, prepared.candidates) for _, s in chunk] if cfg.eval.scoring == "choice" else None
            outs = infer_batch(
                loaded, wrapper, [load_image(s.image) for _, s in chunk], [s.question for _, s in chunk],
                scoring=cfg.eval.scoring, max_new_tokens=cfg.eval.max_new_tokens, candidates=cands, timer=timer,
            )
            sel = last_selection(wrapper)
            for b, ((pos, sample), out) in enumerate(zip(chunk, outs)):
                kept = None
                if pos in overlays:
                    one = sel[b] if isinstance(sel, (list, tuple)) and len(sel) == len(chunk) else sel
                    kept = selection_indices(one)
                rec = _record(pos, sample, out, kept)
                rd.append(rec)
                local.append(rec)
            bar.update(len(chunk))
    rd.close()
    return local


def run_eval(
    prepared: Prepared,
    *,
    loaded: Any = None,
    dist: Optional[DistContext] = None,
    print_results: bool = True,
    mode: str = "new",
) -> EvalResult:
    """Evaluate ``prepared.samples``; ``loaded`` (a :class:`LoadedModel`) skips model loading.

    ``mode``: ``new`` writes a fresh run folder (``name``, else ``name-1``, ...); ``reuse``
    resumes the interrupted run of the same run key (its recorded samples are kept) or
    starts it; ``force`` reruns it from scratch in its folder. Under torchrun the samples are
    sharded and every rank returns the gathered result."""
    from tokensel.experiments.modeling import _SelectionTimer, load_model, wrap_model
    from tokensel.experiments.records import config_key, effective_config, environment
    from tokensel.experiments.rundir import RunDir

    if mode not in RUN_MODES:
        raise ValueError(f"mode must be one of {RUN_MODES}, got {mode!r}")
    cfg = prepared.cfg
    own_dist = dist is None
    if dist is None:
        dist = init_distributed(cfg.eval.dist_backend)
    lock = None
    try:
        _seed_everything(int(cfg.eval.seed))
        if loaded is None:
            loaded = load_model(cfg.model)
        wrapper = wrap_model(loaded, cfg.selector.name, budget_args(cfg)[0], prepared.selector_params,
                             ratio=budget_args(cfg)[1])
        effective = effective_config(cfg, selector_received(wrapper, cfg, prepared.selector_params))
        timer = _SelectionTimer(wrapper)
        reset_peak_memory()
        first_call = _warm_up(loaded, wrapper, prepared, timer)
        _seed_everything(int(cfg.eval.seed))  # the warm-up leaves no trace in the results
        env = environment(seed=int(cfg.eval.seed))
        info = {"key": prepared.key, "config_key": config_key(cfg), "data_fingerprint": prepared.data_fp,
                "candidates_fp": candidates_fingerprint(prepared.candidates),
                "samples": len(prepared.samples), "name": cfg.logging.run_name or default_run_name(cfg),
                "environment": env}
        choice = None
        if dist.is_main:
            lock = _lock_run(prepared, mode)
            choice = _choose_dir(prepared, mode)
        path, fresh, finished = dist.broadcast(None if choice is None else (str(choice[0]), *choice[1:]))
        if finished:
            if dist.is_main:
                print(f"tokensel: {path} was finished by another process meanwhile; its result is reused",
                      file=sys.stderr)
            return load_finished(cfg, Path(path))
        rd = RunDir(Path(path), rank=dist.rank, world=dist.world_size)
        if dist.is_main:
            rd.start(info, _yaml(effective), fresh=fresh)
        dist.barrier()
        done = [] if fresh else _kept_records(rd, prepared)
        recorded = {r["id"] for r in done}
        todo = [(i, s) for i, s in enumerate(prepared.samples) if s.id not in recorded]
        t_start = time.perf_counter()
        local = _evaluate(prepared, loaded, wrapper, timer, todo, dist, rd)
        wall = time.perf_counter() - t_start
        records = sorted(dist.gather(local) + done, key=lambda r: r["_pos"])
        metrics = get_dataset(cfg.dataset.format).compute_metrics(records)
        metrics.update(run_ledger(records))
        metrics.update(peak_memory())
        metrics.update(first_call)
        result = EvalResult(metrics=metrics, records=records, run_dir=rd.path, config=cfg)
        result.extra.update(effective=effective, environment=env, resumed_samples=len(done))
        if dist.is_main:
            metrics["wall_s_rank0"] = wall
            doc = {**metrics, "config": effective, "environment": env}
            rd.finish([{k: v for k, v in r.items() if k != "_pos"} for r in records], doc, info)
            _write_outputs(cfg, result, print_results=print_results, num_tokens=_num_tokens(records))
        dist.barrier()
        return result
    finally:
        if lock is not None:
            lock.release()
        if own_dist:
            dist.close()


def _yaml(data: dict) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(data))


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def _num_tokens(records: list[dict]) -> Optional[int]:
    vals = [r.get("image_tokens") for r in records if r.get("image_tokens")]
    return vals[0] if vals else None


def wandb_config(result: EvalResult) -> dict:
    """The W&B run config: the flat effective configuration and ``env.*`` entries."""
    from tokensel.experiments.records import flat_effective_config

    flat = flat_effective_config(result.extra["effective"])
    flat.update({f"env.{k}": v for k, v in result.extra["environment"].items() if k != "argv"})
    return flat


def wandb_metrics(metrics: dict) -> dict:
    """The metrics, and each ``<metric>_ci`` also as the scalars ``_ci_low`` / ``_ci_high``,
    the ledger's per-layer image tokens as ``layer_image_tokens/<layer>`` (W&B charts plot
    scalars)."""
    out = dict(metrics)
    for key, value in metrics.items():
        if key.endswith("_ci") and isinstance(value, (list, tuple)) and len(value) == 2:
            out[f"{key}_low"], out[f"{key}_high"] = value
    for layer, value in enumerate(metrics.get("layer_image_tokens") or []):
        out[f"layer_image_tokens/{layer}"] = value
    return out


def _write_outputs(cfg: DictConfig, result: EvalResult, *, print_results: bool, num_tokens: Optional[int]) -> None:
    name = cfg.logging.run_name or default_run_name(cfg)
    run_dir = result.run_dir
    run = WandbRun(
        mode=cfg.logging.wandb_mode,
        project=cfg.logging.project,
        entity=cfg.logging.entity,
        group=cfg.logging.group,
        tags=list(cfg.logging.tags),
        name=name,
        config=wandb_config(result),
        directory=run_dir,
    )
    try:
        run.log_metrics(wandb_metrics(result.metrics))
        if run.active and cfg.logging.log_table:
            rows = [[r.get(c) for c in TABLE_COLUMNS] for r in result.records]
            run.log_table("results", TABLE_COLUMNS, rows)
        if run.active and num_tokens:
            images, captions = [], []
            for r in result.records:
                idx = r.get("kept_indices")
                if not idx:
                    continue
                from tokensel.experiments.modeling import load_image

                ov = _overlay(load_image(r["image"]), idx, num_tokens)
                if ov is not None:
                    images.append(ov)
                    captions.append(f"{r['id']}: {r['question']} -> {r['prediction']} (gold {r['answer']}, kept {len(idx)})")
            run.log_images("selection_overlays", images, captions)
        if run.active:
            result.wandb_dir = run.run_dir
    finally:
        run.finish()

    if print_results:
        eff = result.extra.get("effective") or {}
        sel, k = eff.get("selector", {}).get("name", cfg.selector.name), eff.get("budget", {}).get("k", cfg.budget.k)
        title = f"\n{name}  (selector={sel}, {'k=' + str(k) if k is not None else budget_label(cfg)})"
        dataset = get_dataset(cfg.dataset.format)
        print(results_tables(result.metrics, headline_metrics(dataset), title=title, tables=dataset.tables))
        ledger = ledger_table(result.metrics)
        if ledger:
            print("\n" + ledger)
        print(f"\nrun directory: {run_dir}" + (f"\nW&B ({run.mode}): {result.wandb_dir}" if result.wandb_dir else ""))
