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
# # Quick start: select tokens for one image
#
# A vision-language model (VLM) turns an image into a grid of *vision tokens*. The embedded
# default model of tokensel, `shapes-llava`, has the LLaVA-1.5 layout: a 336 x 336 image is cut
# into 24 x 24 = 576 patches of 14 px, and each patch becomes one token that the language model
# reads. A token selector keeps only `k` of them.
#
# In this tutorial we
#
# 1. load the model and one image with a question,
# 2. ask the question with all 576 tokens and with 16 tokens chosen by MMTok,
# 3. look at *which* 16 patches MMTok kept, next to what other selectors keep,
# 4. call a selector directly on the model's features with a `TokenBatch`.
#
# Everything runs on a CPU in well under a minute.

# %%
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib.pyplot as plt
import torch

import tokensel
from tokensel.zoo import shapes
from tokensel.experiments.plots import draw_kept
from tokensel.zoo.shapes_llava import format_prompt

torch.set_num_threads(1)
print(tokensel.list_selectors())

# %% [markdown]
# ## The model and an image
#
# `tokensel.zoo.load` returns a regular transformers `LlavaForConditionalGeneration` and its
# processor. The weights ship inside the package, so nothing is downloaded. The images come from
# the synthetic shapes VQA generator in `tokensel.zoo.shapes`: coloured shapes on a noisy
# background, with existence, colour and counting questions whose answers are known exactly.

# %%
model, processor = tokensel.zoo.load("shapes-llava")
records = shapes.generate_split("test", num_images=4)
record = next(r for r in records if r.category == "color")
print(record.question, "->", record.answer)

plt.figure(figsize=(3.5, 3.5))
plt.imshow(record.image)
plt.title(record.question, fontsize=9)
plt.axis("off")
plt.show()

# %% [markdown]
# ## Asking with all tokens, and with 16
#
# `tokensel.prune(model, selector, k=...)` wraps the model: the wrapper calls the vision tower,
# lets the selector pick `k` of the 576 tokens, and runs the language model on the question plus
# the kept tokens only. It takes the same inputs as the model. The processor is passed as
# `tokenizer` so that the wrapper can find the question in the prompt (MMTok covers the
# question's tokens).
#
# `tokensel.zoo.predict` scores the candidate answers of the question's category (colour names
# here) from the next-token logits, for the plain model or a pruned one alike.

# %%
full = tokensel.zoo.predict(model, processor, [record.image], [record.question], [record.category])
pruned = tokensel.prune(model, "mmtok", k=16, tokenizer=processor)
small = tokensel.zoo.predict(pruned, processor, [record.image], [record.question], [record.category])
print(f"576 tokens: {full[0]!r}   16 MMTok tokens: {small[0]!r}   truth: {record.answer!r}")

# %% [markdown]
# Each call returns a record of what it kept (`out.pruning` on a forward output, and
# `pruned.record` for the most recent call): `record.selection[sample][image]` holds the kept
# token indices, in ascending raster order (index `i` is patch row `i // 24`, column `i % 24`).

# %%
kept = pruned.record.selection[0][0]
print(kept.tolist())

# %% [markdown]
# ## Looking at what was kept
#
# `tokensel.experiments.plots.draw_kept` draws the image with the kept patches framed and the dropped ones faded.

# %%
fig, ax = plt.subplots(figsize=(3.5, 3.5))
draw_kept(ax, record.image, kept, f"MMTok, k=16: answers {small[0]!r}")
plt.show()

# %% [markdown]
# The same question through several selectors. Text-aware selectors (MMTok, Top-K by text
# relevance) can concentrate on the shape the question is about; diversity-based ones
# (DivPrune) and spatial ones (uniform, pooling) spread their budget over the image.

# %%
names = ["mmtok", "mmtok-vision", "topk-text", "divprune", "visionzip", "uniform"]
fig, axes = plt.subplots(2, 3, figsize=(9, 6.6))
for ax, name in zip(axes.flat, names):
    p = tokensel.prune(model, name, k=16, tokenizer=processor)
    answer = tokensel.zoo.predict(p, processor, [record.image], [record.question], [record.category])[0]
    sel = p.record.selection[0][0]
    draw_kept(ax, record.image, sel, f"{name}: {answer!r}")
fig.suptitle(f"{record.question}  (truth: {record.answer!r}), k = 16 of 576", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Calling a selector directly
#
# Under the hood every selector receives a `tokensel.TokenBatch`: the projected vision tokens
# `vision` `[n, D]` (what is kept), optionally the encoder features `vision_raw` `[n, d]`, and the
# question's token embeddings `text` `[m, D]`. Here we compute them from the model ourselves: the
# projected tokens with `get_image_features`, the question with the language model's embedding
# table.

# %%
inputs = processor(images=[record.image], text=[format_prompt(record.question)], return_tensors="pt")
with torch.no_grad():
    out = model.get_image_features(pixel_values=inputs["pixel_values"])
    feats = getattr(out, "pooler_output", out)  # transformers 5 returns an output object
    vision = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats.reshape(-1, feats.shape[-1])
    question_ids = processor.tokenizer(record.question, add_special_tokens=False, return_tensors="pt").input_ids[0]
    text = model.get_input_embeddings()(question_ids)  # [m, D]

batch = tokensel.TokenBatch(vision=vision, text=text)
selector = tokensel.create_selector("mmtok", alpha=0.5, tau_tv=0.02, tau_vv=0.2)
selection = selector(batch, k=16)
print(vision.shape, text.shape, selection.indices.tolist())

# %% [markdown]
# Without `vision_raw` MMTok measures vision-vision similarity on the projected tokens, and the
# wrapper strips a few stop words from the question before embedding it, so this selection may
# differ slightly from the wrapper's. Both are valid MMTok selections of the same image.
#
# Selectors are ordinary objects: `create_selector(name, **params)` builds one from the
# registry, `selector_info(name)` describes it, and calling it with a `TokenBatch` and `k`
# returns a `Selection` whose `indices` are sorted ascending.

# %%
info = tokensel.selector_info("mmtok")
print(info.description)
print(info.paper)

fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
for ax, k in zip(axes, [8, 32, 96]):
    draw_kept(ax, record.image, selector(batch, k=k).indices, f"MMTok on TokenBatch, k={k}")
plt.tight_layout()
plt.show()

# %% [markdown]
# Next: [tutorial 2](02_mmtok_objective.ipynb) opens up MMTok's objective and checks its
# greedy solution against the exact optimum.
