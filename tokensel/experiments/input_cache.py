"""An explicit memo of processor outputs, scoped to one sweep process.

A sweep evaluates the same questions under many (selector, budget) points; the processor's
output for a batch (pixel values, token ids, attention mask) does not depend on the point.
:class:`CachedProcessor` wraps a processor and returns the output it computed before for the
same call: same image contents (a SHA-1 of each image's pixels, size and mode), same texts,
same keyword arguments and the same tokenizer padding side. Everything else is passed through
to the wrapped processor. Returned tensors are shared between calls: callers must not modify
them in place (the runner and the pruning wrapper do not).

It is switched on per sweep (``cache_inputs: true`` in the sweep config; the demo's does) and
lives as long as the sweep's loaded model. It changes no number: a test runs a sweep with and
without it and compares every record.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

__all__ = ["CachedProcessor"]


def _image_digest(image: Any) -> str:
    if hasattr(image, "tobytes") and hasattr(image, "size"):  # PIL
        head = f"{image.mode}:{image.size}".encode()
        return hashlib.sha1(head + image.tobytes()).hexdigest()
    import numpy as np

    arr = np.ascontiguousarray(np.asarray(image))
    return hashlib.sha1(f"{arr.dtype}:{arr.shape}".encode() + arr.tobytes()).hexdigest()


class CachedProcessor:
    """``processor(...)`` memoised by content (see the module docstring), keeping the
    ``max_entries`` most recently used outputs (one entry per call, i.e. per batch)."""

    def __init__(self, processor: Any, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.processor = processor
        self.max_entries = max_entries
        self.hits = self.misses = 0
        self._memo: OrderedDict = OrderedDict()

    def _key(self, images: Any, text: Any, kwargs: dict) -> tuple:
        imgs = images if isinstance(images, (list, tuple)) else [images]
        texts = tuple(text) if isinstance(text, (list, tuple)) else (text,)
        tok = getattr(self.processor, "tokenizer", None)
        extra = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
        return (tuple(_image_digest(im) for im in imgs), texts, extra, getattr(tok, "padding_side", None))

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> Any:
        if images is None or text is None:
            return self.processor(images=images, text=text, **kwargs)
        key = self._key(images, text, kwargs)
        if key in self._memo:
            self.hits += 1
            self._memo.move_to_end(key)
            return self._memo[key]
        self.misses += 1
        out = self.processor(images=images, text=text, **kwargs)
        self._memo[key] = out
        if len(self._memo) > self.max_entries:
            self._memo.popitem(last=False)
        return out

    def __getattr__(self, name: str) -> Any:
        if name == "processor":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.processor, name)
