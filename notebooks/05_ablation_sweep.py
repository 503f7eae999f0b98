# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # An ablation sweep tracked in W&B
#
# Experiments in tokensel are YAML configs: one *experiment config* says which model, selector,
# budget and dataset to evaluate; a *sweep config* lists a grid of overrides. Every grid point
# becomes one evaluation with its own Weights & Biases run (offline here: nothing leaves the
# machine), and the sweep ends with a summary table and an accuracy-vs-k plot.
#
# We ablate MMTok's vision-vision term (its weight `alpha`; `alpha = 0` keeps only the
# question-coverage term) at two budgets, next to DivPrune and the unpruned model, on the
# embedded `shapes-llava` model and a small generated shapes test set. The same commands work
# on real benchmarks (POPE, GQA, MME) with a real checkpoint: see
# `experiments/configs/README.md` in the repository.

# %%
import json
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["WANDB_MODE"] = "offline"  # never upload from this tutorial
os.environ.setdefault("WANDB_SILENT", "true")

import matplotlib.pyplot as plt
import torch

from tokensel.experiments.sweep import load_sweep, main as sweep_cli, run_sweep
from tokensel.experiments.tracking import find_offline_runs

torch.set_num_threads(1)

# %% [markdown]
# ## The configs
#
# The experiment config below evaluates `shapes-llava` on 8 generated scenes (the `shapes`
# format writes `data.jsonl` and the images on first use). `eval.scoring: choice` picks the
# answer word with the highest next-token logit among the question category's candidates.
# `logging.wandb_mode: offline` writes each W&B run to disk; `wandb sync` can upload it later.

# %%
Path("shapes.yaml").write_text(
    """\
model:
  name: shapes-llava
selector:
  name: mmtok
  params: {}
budget:
  k: 64
dataset:
  format: shapes
  path: data/shapes-test/data.jsonl
  generate_images: 8
  name: shapes
eval:
  scoring: choice
logging:
  output_dir: runs
  project: tokensel-tutorial
  wandb_mode: offline
"""
)

Path("ablation.yaml").write_text(
    """\
name: mmtok-alpha-ablation
base: shapes.yaml
grid:
  selector.name: [none, mmtok, divprune]
  budget.k: [4, 32]
  selector.params.alpha: [0.0, 0.5]
seeds: [0]
"""
)
print(sorted(str(p) for p in Path(".").glob("*.yaml")))

# %% [markdown]
# The grid has 3 x 2 x 2 = 12 combinations, but fewer distinct runs: `none` (all tokens)
# ignores the budget, and DivPrune takes no `alpha`, so those duplicates run once. The CLI's
# `--dry-run` lists the points without running anything (on the command line:
# `tokensel sweep ablation.yaml --dry-run`).

# %%
exit_code = sweep_cli(["ablation.yaml", "--dry-run"])

# %% [markdown]
# ## Running the sweep
#
# `run_sweep` runs every point in this process (the model is loaded once) and returns one
# summary row per run; `tokensel sweep ablation.yaml` does the same from a shell. Each run
# writes its effective `config.yaml`, per-question `results.jsonl`, `metrics.json` and a W&B
# offline run under `runs/<sweep name>/<run name>/`.

# %%
spec, base = load_sweep("ablation.yaml")
rows = run_sweep(spec, base, print_results=True)

# %% [markdown]
# ## Reading the results
#
# The summary rows are plain dicts, also saved as `runs/<sweep>/summary.json`:

# %%
summary = json.loads(Path("runs/mmtok-alpha-ablation/summary.json").read_text())
print(len(summary), "runs;", "keys:", list(summary[0]))

# %% [markdown]
# The sweep saved its own accuracy-vs-k plot next to the summary (and logged it to the summary
# W&B run):

# %%
from IPython.display import Image, display

display(Image(filename="runs/mmtok-alpha-ablation/accuracy_vs_k.png"))

# %% [markdown]
# The rows are easy to plot any other way, for example accuracy in percent with the unpruned
# model as a dashed line. (With 8 scenes every point is a handful of questions, so differences
# of a few points are noise; raise `generate_images` and `dataset.limit` for real comparisons.)

# %%
full = next(r for r in summary if r["selector"] == "none")
lines = {}
for r in summary:
    if r["selector"] == "none":
        continue
    label = r["selector"] + (f" (alpha={r['alpha']})" if r.get("alpha") is not None else "")
    lines.setdefault(label, []).append((r["k"], 100 * r["accuracy"]))
budgets = sorted({k for points in lines.values() for k, _ in points})

fig, ax = plt.subplots(figsize=(5.5, 3.5))
for label, points in sorted(lines.items()):
    points.sort()
    ax.plot([k for k, _ in points], [a for _, a in points], "o-", label=label)
ax.axhline(100 * full["accuracy"], color="grey", ls="--", label="all 576 tokens")
ax.set_xscale("log", base=2)
ax.set_xticks(budgets, [str(k) for k in budgets])
ax.set_xlabel("vision tokens kept (k)")
ax.set_ylabel("accuracy (%)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What W&B recorded
#
# Each run also went to an offline W&B run, `wandb/offline-run-*` inside its run folder:
# W&B's transaction log `run-<id>.wandb` (which `wandb sync` uploads, e.g. `wandb sync
# runs/mmtok-alpha-ablation/*/wandb/offline-run-*`) and the media logged under `files/media`
# (the per-question results table, the selection overlays). Its config is the run's
# `config.yaml`, flattened, and its summary the run's `metrics.json`, so the numbers above
# are the ones the W&B web UI shows after syncing. The summary run (`summary/`) holds the
# sweep's table and the accuracy-vs-k plot.

# %%
folders = find_offline_runs("runs/mmtok-alpha-ablation")
print(f"{len(folders)} offline W&B runs to sync, with the media they logged:")
for folder in folders:
    media = sorted(p.relative_to(folder / "files" / "media").parent.as_posix() for p in (folder / "files" / "media").rglob("*.*"))
    owner = folder.parent.parent.name
    print(f"{owner:<34} {next(folder.glob('run-*.wandb')).name:<22} media: {dict(Counter(media))}")

# %% [markdown]
# Per-question records make error analysis easy, for instance accuracy per question category
# for each run:

# %%
for r in summary:
    records = [json.loads(line) for line in Path(r["run_dir"], "results.jsonl").read_text().splitlines()]
    per_cat = {}
    for rec in records:
        per_cat.setdefault(rec["category"], []).append(rec["correct"])
    cats = "  ".join(f"{c}: {100 * sum(v) / len(v):5.1f}%" for c, v in sorted(per_cat.items()))
    name = r["selector"] + ("" if r["k"] is None else f" k={r['k']}") + (f" alpha={r['alpha']}" if r.get("alpha") is not None else "")
    print(f"{name:<24} {cats}")

# %% [markdown]
# ## Scaling out
#
# Rerunning the sweep skips every finished point (found by a hash of its effective
# configuration) and rebuilds the summary; an interrupted point resumes where it stopped, and
# `--force` reruns. Without W&B, `tokensel sweep ablation.yaml --shard i/N` runs one machine's
# share and `--summarize` merges the finished runs. With W&B, `--export-wandb` writes a sweep
# definition whose one parameter `point` enumerates the same deduplicated points; each
# `wandb agent ...` runs `tokensel sweep ablation.yaml point=<j>` from the installed package.

# %%
exit_code = sweep_cli(["ablation.yaml", "--export-wandb", "sweep.yaml"])
print(Path("sweep.yaml").read_text())
