"""Model zoo: small VLMs whose weights ship inside the package and load offline.

    >>> import tokensel
    >>> tokensel.zoo.list()
    ['shapes-llava']
    >>> model, processor = tokensel.zoo.load("shapes-llava")

``shapes-llava`` is a LLaVA-1.5-shaped model (CLIP ViT at 336 px / patch 14 -> 576 vision
tokens, MLP projector, small Llama) trained from scratch on the synthetic shapes VQA
(:mod:`tokensel.zoo.shapes`) by ``experiments/train_shapes_llava.py``. Its projected vision
tokens were trained to live in the LM's word-embedding space, so MMTok's text-vision coverage
is meaningful on it.

Every shipped folder carries a ``SHA256SUMS`` of its files (:mod:`tokensel.zoo.integrity`),
checked by :func:`load`; names are registered names only (``load("../weights/x")`` is refused:
load checkpoint folders with :func:`tokensel.load_vlm`).
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any, Sequence

__all__ = ["list", "load", "weights_dir", "info", "predict", "answer_from_logits"]

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"


def list() -> builtins.list[str]:  # the documented name is tokensel.zoo.list()
    """Names of the models whose weights ship with the package."""
    if not WEIGHTS_ROOT.is_dir():
        return []
    return sorted(
        p.name for p in WEIGHTS_ROOT.iterdir() if (p / "config.json").is_file() and (p / "model.safetensors").is_file()
    )


def _registered(name: object) -> str:
    """``name`` if it is a registered zoo name; a path or anything else is refused."""
    if not isinstance(name, str):
        raise TypeError(f"zoo: name must be a registered model name (str), got {type(name).__name__} {name!r}")
    names = list()
    if name not in names:
        pathlike = any(sep in name for sep in ("/", "\\")) or name.startswith((".", "~"))
        hint = "; a zoo name is not a path: load a checkpoint folder with tokensel.load_vlm(path)" if pathlike else ""
        raise ValueError(f"zoo: no shipped model named {name!r}; registered names: {', '.join(names) or '(none)'}"
                         f"{hint}")
    return name


def weights_dir(name: str) -> Path:
    """Folder of a shipped model's files (``name`` must be one of :func:`list`)."""
    return WEIGHTS_ROOT / _registered(name)


def info(name: str) -> dict:
    """The training record stored next to the weights (``training_info.json``), if any."""
    p = weights_dir(name) / "training_info.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def load(name: str = "shapes-llava", device: str = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """Load ``(model, processor)`` of a shipped model, offline, in eval mode.

    ``name`` must be a registered name (:func:`list`), not a path (checkpoint folders are
    :func:`tokensel.load_vlm`'s job). Every file is checked against the ``SHA256SUMS`` shipped
    beside the weights, and the checkpoint must load with no missing, unexpected or non-finite
    tensor (:class:`tokensel.models.CheckpointError` otherwise). ``dtype`` defaults to float32.
    """
    import torch

    from tokensel.models.loading import load_vlm
    from tokensel.zoo.integrity import verify

    path = weights_dir(name)
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"zoo.load: device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from exc
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"zoo.load: dtype must be a floating torch.dtype or None, got {dtype!r}")
    verify(path)
    model, processor, _family = load_vlm(path, dtype=dtype or torch.float32, local_files_only=True)
    return model.to(target).eval(), processor


def answer_from_logits(logits, categories: Sequence[str], tokenizer) -> builtins.list[str]:
    """Answers by comparing the last-position logits of each category's candidate words.

    ``logits`` is [batch, vocab] (the next-token logits after ``ASSISTANT:``). This is the
    scoring rule used for every accuracy the project reports on shapes-llava; greedy decoding
    of one token (``model.generate(..., max_new_tokens=1)``) agrees with it whenever the model
    puts its top logit on a candidate word, which the trained model does.
    """
    from tokensel.zoo.shapes import answer_vocabulary

    out = []
    for row, cat in zip(logits, categories):
        cands = answer_vocabulary(cat)
        ids = tokenizer.convert_tokens_to_ids(builtins.list(cands))
        out.append(cands[int(row[ids].argmax())])
    return out


def predict(model, processor, images, questions: Sequence[str], categories: Sequence[str]) -> builtins.list[str]:
    """Batch prediction with all vision tokens (``model`` may also be a pruned wrapper)."""
    import torch

    from tokensel.zoo.shapes_llava import format_prompt

    enc = processor(images=builtins.list(images), text=[format_prompt(q) for q in questions],
                    return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits[:, -1]
    return answer_from_logits(logits, categories, processor.tokenizer)
