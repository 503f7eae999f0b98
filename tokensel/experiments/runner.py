"""The evaluation runner: config -> (validated, dataset loaded) -> model -> metrics + logs.

Everything that can fail because of the config (selector name and parameters, budget, dataset
file, types) is checked in :func:`prepare` before any model is loaded.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from tokensel.experiments.config import (
    ConfigError,
    effective_selector_params,
    load_config,
    save_config,
    to_flat_dict,
)
from tokensel.experiments.data import DatasetError, Sample, candidate_answers, candidates_for, load_dataset
from tokensel.experiments.dist import DistContext, init_distributed
from tokensel.experiments.metrics import compute_metrics, is_correct
from tokensel.experiments.tables import format_table, metrics_table
from tokensel.experiments.tracking import WandbRun

__all__ = ["Prepared", "prepare", "run_eval", "EvalResult", "default_run_name", "HEADLINE_METRICS"]

HEADLINE_METRICS = (
    "accuracy",
    "pope_f1",
    "pope_precision",
    "pope_recall",
    "pope_yes_ratio",
    "mme_score",
    "mean_kept_tokens",
    "prefill_ms",
    "selection_ms",
)

TABLE_COLUMNS = ["id", "category", "question", "answer", "prediction", "correct", "kept_tokens", "prefill_ms", "selection_ms"]


@dataclass
class Prepared:
    cfg: DictConfig
    samples: list[Sample]
    selector_params: dict
    #: answer sets per category for ``eval.scoring: choice``
    candidates: dict = field(default_factory=dict)


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
        cfg=cfg, samples=samples, selector_params=effective_selector_params(cfg, with_seed=True), candidates=candidates
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-") or "run"


def default_run_name(cfg: DictConfig) -> str:
    ds = cfg.dataset.name or Path(cfg.dataset.path).stem
    if cfg.selector.name == "none" or cfg.budget.k is None:
        sel = "full"
    else:
        sel = f"{cfg.selector.name}-k{cfg.budget.k}"
        for key, value in sorted(effective_selector_params(cfg).items()):
            sel += f"-{key}{value}"
    if cfg.eval.seed:
        sel += f"-s{cfg.eval.seed}"
    return _slug(f"{ds}-{sel}")


def _unique_dir(parent: Path, name: str) -> Path:
    path = parent / name
    n = 1
    while path.exists():
        path = parent / f"{name}-{n}"
        n += 1
    return path


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


def run_eval(
    prepared: Prepared,
    *,
    loaded: Any = None,
    dist: Optional[DistContext] = None,
    print_results: bool = True,
) -> EvalResult:
    """Evaluate ``prepared.samples``; ``loaded`` (a :class:`LoadedModel`) skips model loading.
    Under torchrun the samples are sharded and every rank returns the gathered result."""
    from tqdm.auto import tqdm

    from tokensel.experiments.modeling import (
        _SelectionTimer,
        infer_batch,
        load_image,
        load_model,
        selection_indices,
        wrap_model,
    )

    cfg = prepared.cfg
    own_dist = dist is None
    if dist is None:
        dist = init_distributed(cfg.eval.dist_backend)
    try:
        _seed_everything(int(cfg.eval.seed))
        if loaded is None:
            loaded = load_model(cfg.model)
        wrapper = wrap_model(loaded, cfg.selector.name, cfg.budget.k, prepared.selector_params)
        timer = _SelectionTimer(wrapper)
        n_overlay = cfg.logging.num_overlays
        local: list[dict] = []
        shard = dist.shard(prepared.samples)
        t_start = time.perf_counter()
        bs = int(cfg.eval.batch_size)
        chunks = [shard[i : i + bs] for i in range(0, len(shard), bs)]
        with tqdm(
            total=len(shard),
            desc=f"eval {cfg.selector.name} k={cfg.budget.k}" + (f" [rank {dist.rank}]" if dist.enabled else ""),
            disable=not cfg.eval.progress,
            position=dist.rank if dist.enabled else None,
            leave=dist.is_main,
            dynamic_ncols=True,
        ) as bar:
            for chunk in chunks:
                images = [load_image(s.image) for _, s in chunk]
                questions = [s.question for _, s in chunk]
                cands = [candidates_for(s, prepared.candidates) for _, s in chunk] if cfg.eval.scoring == "choice" else None
                outs = infer_batch(
                    loaded, wrapper, images, questions, scoring=cfg.eval.scoring,
                    max_new_tokens=cfg.eval.max_new_tokens, candidates=cands, timer=timer,
                )
                sel = getattr(wrapper, "last_selection", None)
                for b, ((pos, sample), out) in enumerate(zip(chunk, outs)):
                    rec = {
                        "_pos": pos,
                        "id": sample.id,
                        "image": sample.image,
                        "category": sample.category,
                        "question": sample.question,
                        "answer": sample.answer,
                        **out,
                        "correct": is_correct(out["prediction"], sample.answer),
                    }
                    for key, value in sample.extra.items():
                        rec.setdefault(key, value)
                    if pos < n_overlay:
                        rec["kept_indices"] = selection_indices(sel[b] if isinstance(sel, (list, tuple)) and len(sel) == len(chunk) else sel)
                    local.append(rec)
                bar.update(len(chunk))
        wall = time.perf_counter() - t_start
        records = dist.gather(local)
        metrics = compute_metrics(records, dataset_format=cfg.dataset.format)
        result = EvalResult(metrics=metrics, records=records, run_dir=None, config=cfg)
        if dist.is_main:
            metrics["wall_s_rank0"] = wall
            _write_outputs(cfg, result, print_results=print_results, num_tokens=_num_tokens(records))
        dist.barrier()
        return result
    finally:
        if own_dist:
            dist.close()


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


def _write_outputs(cfg: DictConfig, result: EvalResult, *, print_results: bool, num_tokens: Optional[int]) -> None:
    name = cfg.logging.run_name or default_run_name(cfg)
    parent = Path(cfg.logging.output_dir)
    if cfg.logging.group:
        parent = parent / _slug(cfg.logging.group)
    parent.mkdir(parents=True, exist_ok=True)
    run_dir = _unique_dir(parent, name)
    run_dir.mkdir(parents=True)
    result.run_dir = run_dir
    save_config(cfg, run_dir / "config.yaml")
    with open(run_dir / "results.jsonl", "w", encoding="utf-8") as f:
        for r in result.records:
            f.write(json.dumps({k: v for k, v in r.items() if k != "_pos"}) + "\n")
    (run_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True))

    run = WandbRun(
        mode=cfg.logging.wandb_mode,
        project=cfg.logging.project,
        entity=cfg.logging.entity,
        group=cfg.logging.group,
        tags=list(cfg.logging.tags),
        name=name,
        config=to_flat_dict(cfg),
        directory=run_dir,
    )
    try:
        run.log_metrics(result.metrics)
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
                    captions.append(f"{r['question']} -> {r['prediction']} (gold {r['answer']}, kept {len(idx)})")
            run.log_images("selection_overlays", images, captions)
        if run.active:
            result.wandb_dir = run.run_dir
    finally:
        run.finish()

    if print_results:
        head = {k: result.metrics[k] for k in ("num_samples",) + HEADLINE_METRICS if k in result.metrics}
        print(metrics_table(head, title=f"\n{name}  (selector={cfg.selector.name}, k={cfg.budget.k})"))
        cats = sorted(k for k in result.metrics if k.startswith("acc/"))
        if cats:
            print()
            print(format_table([{"category": k[4:], "accuracy": result.metrics[k]} for k in cats], ["category", "accuracy"]))
        modes = sorted({k.split("/")[1] for k in result.metrics if k.startswith("pope/")})
        if modes:
            rows = [
                {"pope mode": m, **{f: result.metrics[f"pope/{m}/{f}"] for f in ("f1", "precision", "recall", "yes_ratio")}}
                for m in modes
            ]
            print()
            print(format_table(rows, ["pope mode", "f1", "precision", "recall", "yes_ratio"]))
        if "mme_score" in result.metrics:
            mme = sorted(k[4:-6] for k in result.metrics if k.startswith("mme/") and k.endswith("/score"))
            rows = [
                {
                    "category": c,
                    "acc": result.metrics[f"mme/{c}/acc"],
                    "acc+": result.metrics[f"mme/{c}/acc_plus"],
                    "score": result.metrics[f"mme/{c}/score"],
                }
                for c in mme
            ]
            print()
            print(format_table(rows, ["category", "acc", "acc+", "score"], title="MME"))
        print(f"\nrun directory: {run_dir}" + (f"\nW&B ({run.mode}): {result.wandb_dir}" if result.wandb_dir else ""))
