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
# # Pruning a VLM
#
# `tokensel.prune(model, selector, k=...)` puts a selector inside a transformers VLM: the
# wrapper runs the vision tower, lets the selector keep `k` tokens per image, and runs the
# language model on the shortened sequence, for a forward pass and for `generate` alike. The
# model itself is not modified.
#
# This tutorial uses the embedded `shapes-llava` (a small LLaVA-1.5-architecture model trained
# on synthetic shapes, shipped with the package) so that it runs anywhere in a couple of
# minutes. The last section shows that the same code serves LLaVA-1.5, LLaVA-NeXT and
# Qwen2.5-VL checkpoints loaded with `tokensel.load_vlm`.

# %%
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib.pyplot as plt
import numpy as np
import torch

import tokensel
from tokensel.zoo import shapes
from tokensel.experiments.plots import draw_kept
from tokensel.zoo.shapes_llava import format_prompt

torch.set_num_threads(1)
model, processor = tokensel.zoo.load("shapes-llava")
print(type(model).__name__, f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")

# %% [markdown]
# ## One question, with and without pruning
#
# The wrapper takes exactly what the processor returns. LLaVA's prompt format is
# `USER: <image>\n{question} ASSISTANT:`; the processor expands `<image>` into 576 image
# tokens.

# %%
records = shapes.generate_split("test", num_images=8)
record = next(r for r in records if r.category == "existence")
prompt = format_prompt(record.question)
inputs = processor(images=[record.image], text=[prompt], return_tensors="pt")
print(repr(prompt), "->", inputs["input_ids"].shape[1], "prompt tokens")

pruned = tokensel.prune(model, "mmtok", k=16, tokenizer=processor)
print(pruned)

with torch.no_grad():
    full_ids = model.generate(**inputs, max_new_tokens=1, do_sample=False)
    pruned_ids = pruned.generate(**inputs, max_new_tokens=1, do_sample=False)
new = inputs["input_ids"].shape[1]
print("question:", record.question, " truth:", record.answer)
print("576 tokens:", processor.tokenizer.decode(full_ids[0, new:]))
print(" 16 tokens:", processor.tokenizer.decode(pruned_ids[0, new:]))

# %% [markdown]
# `generate` returns the caller's prompt followed by the new tokens, as the unwrapped model
# does. A forward pass shows the shortening: the language model saw the text tokens plus the 16
# kept image tokens instead of 576.

# %%
with torch.no_grad():
    logits_full = model(**inputs).logits
    logits_pruned = pruned(**inputs).logits
print("sequence length seen by the LM:", logits_full.shape[1], "->", logits_pruned.shape[1])
print("kept token indices:", pruned.record.selection[0][0].tolist())

# %% [markdown]
# ## Budgets: k or ratio
#
# `k` is the number of tokens kept per image (per crop for LLaVA-NeXT); `ratio` keeps a fraction
# of each image's tokens, which is the natural budget for Qwen2.5-VL whose token count depends
# on the image size. Selector parameters are passed through by keyword.

# %%
by_ratio = tokensel.prune(model, "mmtok", ratio=0.1, tokenizer=processor, alpha=0.3)
print(by_ratio.selector, "keeps", by_ratio.budget(576), "of 576 tokens")

# %% [markdown]
# ## What each selector keeps
#
# The kept patches for three budgets, for MMTok and for DivPrune (which ignores the question).

# %%
budgets = [4, 16, 64]
fig, axes = plt.subplots(2, len(budgets), figsize=(3 * len(budgets), 6.4))
for row, name in enumerate(["mmtok", "divprune"]):
    for col, k in enumerate(budgets):
        p = tokensel.prune(model, name, k=k, tokenizer=processor)
        with torch.no_grad():
            p(**inputs)
        draw_kept(axes[row, col], record.image, p.record.selection[0][0], f"{name}, k={k}")
fig.suptitle(record.question, fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Accuracy against the budget
#
# On a small held-out sample (8 scenes, about 30 questions) we compare a few selectors at
# three budgets with the full 576 tokens. `tokensel.zoo.predict` scores the candidate answers
# of each question's category from the next-token logits and works for the plain and the pruned
# model alike. With this few questions the curves are noisy; `tokensel demo` runs the full
# table on 300 questions and [tutorial 5](05_ablation_sweep.ipynb) runs tracked sweeps.

# %%
def accuracy(m, batch_size=16):
    preds = []
    for s in range(0, len(records), batch_size):
        chunk = records[s : s + batch_size]
        preds += tokensel.zoo.predict(
            m, processor, [r.image for r in chunk], [r.question for r in chunk], [r.category for r in chunk]
        )
    return 100.0 * np.mean([p == r.answer for p, r in zip(preds, records)])


t0 = time.perf_counter()
full_acc = accuracy(model)
results = {}
for name in ["mmtok", "divprune", "uniform"]:
    results[name] = [accuracy(tokensel.prune(model, name, k=k, tokenizer=processor)) for k in budgets]
print(f"{len(records)} questions, {time.perf_counter() - t0:.0f} s")
print(f"all 576 tokens: {full_acc:.1f}%")
for name, accs in results.items():
    print(f"{name:>9}: " + "  ".join(f"k={k}: {a:.1f}%" for k, a in zip(budgets, accs)))

plt.figure(figsize=(5, 3.4))
for name, accs in results.items():
    plt.plot(budgets, accs, "o-", label=name)
plt.axhline(full_acc, color="k", ls="--", label="576 tokens")
plt.xscale("log", base=2)
plt.xticks(budgets, [str(k) for k in budgets])
plt.xlabel("vision tokens kept (k)")
plt.ylabel("accuracy (%)")
plt.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The same code for LLaVA and Qwen2.5-VL checkpoints
#
# `tokensel.load_vlm(name_or_path)` loads a supported checkpoint (LLaVA-1.5, LLaVA-NeXT or
# Qwen2.5-VL) with its processor and tells you its family. It never downloads unless asked
# (`download=True`): the path must be a local directory or a model already in the Hugging Face
# cache, resolved without any network access. A checkpoint that would not load as saved
# (a missing, unexpected or NaN tensor, a truncated file, an unreadable config.json) is refused
# with a `CheckpointError` naming the file and the tensors. Here we save `shapes-llava` to a
# folder and load it back the way you would load `llava-hf/llava-1.5-7b-hf`.

# %%
print(tokensel.models.list_families())  # the registered model families (config.model_type)


def answer(path, image, question, selector="mmtok", k=64, max_new_tokens=8):
    """Load a VLM, prune it, and answer one question about one image."""
    model, processor, family = tokensel.load_vlm(path)
    pruned = tokensel.prune(model, selector, k=k, tokenizer=processor)
    prompt = f"USER: <image>\n{question} ASSISTANT:"  # LLaVA-1.5's format
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        out = pruned.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return family, processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


with tempfile.TemporaryDirectory() as folder:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    print(answer(folder, record.image, record.question, k=16, max_new_tokens=1))

# %% [markdown]
# For a real checkpoint only the path changes: `answer("llava-hf/llava-1.5-7b-hf", image,
# question)` once the model is in your cache (or `load_vlm(..., download=True)`). For
# Qwen2.5-VL, build the prompt with the processor's chat template
# (`processor.apply_chat_template`) and prefer a `ratio` budget; the wrapper then keeps each
# kept token's original M-RoPE position, and MMTok uses the Qwen default `tau_tv=0.01`.
# LLaVA-NeXT budgets are per crop. The paper's setting for LLaVA-1.5-7B is `k=64` of 576.
