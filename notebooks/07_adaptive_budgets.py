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
# # Hardness-aware budgets: does a per-question token count beat a fixed k?
#
# A fixed budget gives every question the same number of vision tokens. An easy question (is
# there a red star?) may need few, a hard one (how many green shapes?) more. This tutorial
# studies that on the embedded `shapes-llava` model:
#
# 1. `tokensel.AdaptiveBudget` with MMTok's own stopping rule (`coverage`: the fewest greedy
#    picks reaching a fraction of the coverage of all tokens);
# 2. a hardness signal computed **before any selection**, from the text-vision similarity
#    (how spread the question's attention over the image is), plugged in as a selector's own
#    stopping rule;
# 3. both against fixed budgets k in {4, ..., 128}, at matched mean kept tokens (a fixed run
#    with k = the adaptive run's mean), per question category and POPE mode, with paired
#    bootstrap confidence intervals;
# 4. the prefill time of a batch: with ragged budgets the longest row of the batch sets it.
#
# The data are the first 60 scenes of the generated shapes test split (228 questions); a run is
# a few seconds, the whole notebook about two minutes on one CPU thread. With so few questions
# the intervals are wide: read the numbers as an example of the method, not as a result about
# real VLMs.

# %%
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import tokensel
from tokensel import AdaptiveBudget
from tokensel.budget import Ranking, kept_token_stats
from tokensel.zoo.shapes import generate_split
from tokensel.selectors.mmtok import MMTok
from tokensel.zoo import answer_from_logits
from tokensel.zoo.shapes_llava import format_prompt

torch.set_num_threads(1)
model, processor = tokensel.zoo.load("shapes-llava")
records = generate_split("test", 60)
calib = generate_split("val", 15)  # calibrates the similarity signal (never the test questions)
print(len(records), "test questions,", len(calib), "calibration questions")

# %% [markdown]
# ## One runner for every budget
#
# `run(budget)` scores every question (the answer is the candidate word with the highest
# next-token logit), batch by batch, and records the kept tokens of each question and the wall
# time of each batched prefill (selection included).

# %%
BATCH = 16


def run(budget, selector=None, recs=records):
    sel = selector if selector is not None else "mmtok"
    pruned = tokensel.prune(model, sel, k=budget, tokenizer=processor)
    correct, kept, times, padded = [], [], [], []
    for i in range(0, len(recs), BATCH):
        chunk = recs[i:i + BATCH]
        enc = processor(images=[r.image for r in chunk], text=[format_prompt(r.question) for r in chunk],
                        return_tensors="pt", padding=True)
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = pruned(**enc).logits[:, -1]
        times.append(time.perf_counter() - t0)
        preds = answer_from_logits(logits, [r.category for r in chunk], processor.tokenizer)
        correct += [p == r.answer for p, r in zip(preds, chunk)]
        counts = [int(s[0].numel()) for s in pruned.record.selection]
        kept += counts
        padded.append(max(counts))
    return {"correct": np.array(correct), "kept": np.array(kept), "batch_s": np.array(times),
            "padded": np.array(padded)}


category = np.array([r.category for r in records])
pope_mode = np.array([r.pope_mode or "" for r in records])
run(8, recs=records[:BATCH])  # warm-up (kernel loads), not measured

# %% [markdown]
# ## Fixed budgets

# %%
FIXED = [4, 8, 16, 32, 64, 128]
fixed = {k: run(k) for k in FIXED}
for k, r in fixed.items():
    print(f"k={k:4d}  accuracy {r['correct'].mean():.3f}")

# %% [markdown]
# ## Adaptive budgets from MMTok's coverage curve
#
# MMTok's coverage saturates fast on this model (its text-vision softmax is sharp), so the
# interesting targets are close to 1.

# %%
COVERAGE = [0.995, 0.999, 0.9995]
adaptive = {f"coverage {c}": run(AdaptiveBudget(128, k_min=4, coverage=c)) for c in COVERAGE}
for name, r in adaptive.items():
    s = kept_token_stats(r["kept"])
    print(f"{name:16s} accuracy {r['correct'].mean():.3f}  kept mean {s['mean']:.1f}  median {s['median']:.0f}"
          f"  p10 {s['p10']:.0f}  p90 {s['p90']:.0f}")

# %% [markdown]
# ## A hardness signal that needs no selection: text-vision spread
#
# For each question token, the softmax of its cosine similarity to the vision tokens (MMTok's
# text-vision matrix, temperature `tau_tv`) says where the question looks. Its perplexity
# `exp(entropy)` is the effective number of image tokens the token attends to; averaged over
# the question's tokens it is a per-question signal, computed from the features alone. The
# budget is `k = clamp(round(scale * signal), 4, 128)`, with `scale` calibrated on the
# validation questions to a target mean.
#
# A selector defines its own stopping rule by overriding `ranking`: here the greedy picks of
# MMTok, with a "coverage shortfall" that is zero from pick k on, so that `coverage=1.0` stops
# exactly at k.


# %%
def spread(batch):
    """float64 [B]: mean over question tokens of exp(entropy) of the text-vision softmax."""
    t = torch.nn.functional.normalize(batch.text.float(), dim=-1)
    v = torch.nn.functional.normalize(batch.vision.float(), dim=-1)
    p = torch.softmax(t @ v.transpose(1, 2) / 0.02, dim=-1)
    ent = -(p * p.clamp_min(1e-30).log()).sum(-1)
    m = batch.text_mask.float() if batch.text_mask is not None else torch.ones_like(ent)
    return ((ent.exp() * m).sum(1) / m.sum(1)).double()


class SpreadBudgetMMTok(MMTok):
    """MMTok's greedy, stopped at k = clamp(round(scale * spread)) picks."""

    def __init__(self, scale=1.0, k_min=4, **kw):
        super().__init__(**kw)
        self.scale, self.k_min = scale, k_min
        self.signals = []

    def ranking(self, batch, k):
        base = super().ranking(batch, k)
        s = spread(batch)
        self.signals += s.tolist()
        stop = (self.scale * s).round().clamp(min=min(self.k_min, k), max=k).long()
        slots = torch.arange(k)
        shortfall = (slots[None, :] + 1 < stop[:, None]).double()
        return Ranking(indices=base.indices, gains=base.gains, shortfall=shortfall,
                       total=torch.ones(len(s), dtype=torch.float64))


probe = SpreadBudgetMMTok()
run(AdaptiveBudget(128, coverage=1.0), selector=probe, recs=calib)
cal = np.array(probe.signals)
print(f"spread on calibration questions: median {np.median(cal):.1f}, p10 {np.percentile(cal, 10):.1f}, "
      f"p90 {np.percentile(cal, 90):.1f} tokens")
for target in (8, 16, 32):
    scale = target / cal.mean()
    adaptive[f"spread mean~{target}"] = run(AdaptiveBudget(128, coverage=1.0), selector=SpreadBudgetMMTok(scale))
    s = kept_token_stats(adaptive[f"spread mean~{target}"]["kept"])
    print(f"spread target {target}: kept mean {s['mean']:.1f}, p10 {s['p10']:.0f}, p90 {s['p90']:.0f}")

# %% [markdown]
# ## Matched comparison
#
# For each adaptive run with mean kept tokens m, a fixed run with k = round(m) on the same
# questions. The difference of accuracies (adaptive - fixed) gets a paired bootstrap 95%
# interval (2000 resamples of the questions), overall, per category and per POPE mode.

# %%
rng = np.random.default_rng(0)
BOOT = rng.integers(0, len(records), size=(2000, len(records)))


def diff_ci(a, b, mask):
    idx = np.nonzero(mask)[0]
    if idx.size == 0:
        return np.nan, np.nan, np.nan
    d = a[idx].astype(float) - b[idx].astype(float)
    boots = [d[rng.integers(0, idx.size, idx.size)].mean() for _ in range(1000)]
    return d.mean(), *np.percentile(boots, [2.5, 97.5])


groups = [("all", np.ones(len(records), bool))]
groups += [(c, category == c) for c in ("existence", "color", "count")]
groups += [(f"pope {m}", pope_mode == m) for m in ("random", "popular", "adversarial")]
matched = {}
rows = []
for name, r in adaptive.items():
    k = int(round(r["kept"].mean()))
    matched[name] = fixed.get(k) or run(k)
    f = matched[name]
    cells = []
    for g, mask in groups:
        d, lo, hi = diff_ci(r["correct"], f["correct"], mask)
        cells.append(f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    rows.append((name, r["kept"].mean(), k, r["correct"].mean(), f["correct"].mean(), cells))

header = ["budget", "mean kept", "fixed k", "acc adaptive", "acc fixed"] + [f"diff {g} (pts, 95% CI)" for g, _ in groups]
print(" | ".join(header))
for name, m, k, a, b, cells in rows:
    print(" | ".join([name, f"{m:.1f}", str(k), f"{a:.3f}", f"{b:.3f}", *cells]))

# %% [markdown]
# ## Accuracy against mean kept tokens
#
# Fixed budgets as a curve, adaptive runs as points, with 95% bootstrap intervals of the
# accuracy.

# %%
def acc_ci(correct):
    boots = correct[BOOT].mean(axis=1)
    return correct.mean(), *np.percentile(boots, [2.5, 97.5])


fig, ax = plt.subplots(figsize=(6.5, 4))
fx = np.array([fixed[k]["kept"].mean() for k in FIXED])
fy = np.array([acc_ci(fixed[k]["correct"]) for k in FIXED])
ax.errorbar(fx, fy[:, 0], yerr=[fy[:, 0] - fy[:, 1], fy[:, 2] - fy[:, 0]], marker="o", capsize=3, label="fixed k")
for name, r in adaptive.items():
    a, lo, hi = acc_ci(r["correct"])
    ax.errorbar([r["kept"].mean()], [a], yerr=[[a - lo], [hi - a]], marker="s" if "coverage" in name else "^",
                capsize=3, linestyle="none", label=name)
ax.set_xscale("log", base=2)
ax.set_xlabel("mean kept vision tokens per question")
ax.set_ylabel("accuracy")
ax.legend(fontsize=7)
ax.set_title("shapes-llava, 228 test questions")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Prefill time at matched mean tokens
#
# A batch is padded to its longest row, so a ragged budget costs what its largest member needs.
# The wall times recorded above are noisy on a shared machine; here the same two 16-question
# batches are prefilled with the adaptive budget and its matched fixed k alternately, three
# times each, and the fastest of the three is kept (vision tower + selection + language model).

# %%
def best_time(budget, selector, chunk, reps=3):
    pruned = tokensel.prune(model, selector or "mmtok", k=budget, tokenizer=processor)
    enc = processor(images=[r.image for r in chunk], text=[format_prompt(r.question) for r in chunk],
                    return_tensors="pt", padding=True)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        with torch.no_grad():
            pruned(**enc)
        out.append((time.perf_counter() - t0, pruned.record.timings.selection_s))
    return np.array(min(out))


SPECS = {f"coverage {c}": (AdaptiveBudget(128, k_min=4, coverage=c), None) for c in COVERAGE}
SPECS["spread mean~16"] = (AdaptiveBudget(128, coverage=1.0), SpreadBudgetMMTok(16 / cal.mean()))
print("budget | mean kept | mean padded length | adaptive ms / batch (selection) | fixed k ms / batch (selection)")
for name, (budget, selector) in SPECS.items():
    r, k = adaptive[name], int(round(adaptive[name]["kept"].mean()))
    ta, tf = np.zeros(2), np.zeros(2)
    for i in (0, BATCH):
        chunk = records[i:i + BATCH]
        ta += best_time(budget, selector, chunk) / 2
        tf += best_time(k, None, chunk) / 2
    print(f"{name} | {r['kept'].mean():.1f} | {r['padded'].mean():.1f} | {1e3 * ta[0]:.0f} ({1e3 * ta[1]:.0f}) | "
          f"k={k}: {1e3 * tf[0]:.0f} ({1e3 * tf[1]:.0f})")

# %% [markdown]
# ## What we find
#
# On this model and these 228 questions (the numbers printed above; the data, model and picks
# are deterministic, the times are not):
#
# - MMTok's coverage saturates within a few greedy picks on most questions (its text-vision
#   softmax is sharp), so the `coverage` rule spreads budgets only for targets close to 1; at
#   0.999 the kept count runs from 7 (p10) to 30 (p90) tokens, around a mean of 18.
# - Coverage-rule budgets are slightly ahead of the fixed budget at the same mean cost (+1 to
#   +2 accuracy points at means of 7, 18 and 24 tokens), but every 95% interval of the
#   difference includes zero; per category and per POPE mode the intervals are wider still.
#   The fixed-k curve itself is not monotone at this sample size (k = 4: 0.807, k = 8: 0.803).
# - The text-vision spread signal (no selection needed) is heavy-tailed (p10 4, p90 175
#   tokens on the calibration questions); its budgets are slightly behind the matched fixed
#   budget (-1 to -2 points, intervals including zero), and they hurt most on counting
#   questions (-5 and -8 points at means of 19 and 33, intervals including zero): the
#   questions it gives few tokens are not the easy ones.
# - Prefill: a ragged batch is padded to its longest row (mean padded length about 2x the
#   mean kept count for the coverage rule, over 4x for the spread signal). MMTok's greedy stops
#   each row as soon as its rule is decided (rounds of 16, 32, 64, ... picks, finished rows
#   leaving the batch), so the adaptive selection no longer ranks `k_max` = 128 tokens first:
#   measured on one thread, the two 16-question batches cost about 460-480 ms adaptive against
#   450-465 ms at the matched fixed k (selection about 51-55 ms against 41-46 ms; ranking all
#   128 picks before cutting cost 160-185 ms of selection and 580-620 ms in all). What remains
#   is the selection's extra rounds and rule curves (about 10 ms) and the padded length, which
#   costs little here: a fixed k equal to the mean padded length (14 or 32) prefills as fast as
#   k = the mean (6 or 16), because the vision tower dominates this model's prefill. On a large
#   language model the padded length, not the mean, sets the language model's cost.
#
# So on this small synthetic model a per-question budget does not win by a margin the data can
# resolve, and it costs slightly more per batch. The study is a template: `budget.adaptive` in an
# experiment config runs the same comparison through `tokensel eval` and `tokensel sweep` on a
# real model and benchmark.
