"""``tokensel.load_vlm``: load a supported VLM (and its processor) without surprises offline.

By default nothing is downloaded: ``name_or_path`` must be a local directory (as written by
``save_pretrained``) or a hub id already in the Hugging Face cache. Pass ``download=True`` to
allow fetching from the hub.
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

__all__ = ["LoadedVLM", "load_vlm", "SUPPORTED_FAMILIES"]

#: config.model_type -> model class name in transformers
SUPPORTED_FAMILIES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}


class LoadedVLM(NamedTuple):
    model: object
    processor: object | None
    family: str


def load_vlm(name_or_path: str | os.PathLike, *, download: bool = False, processor: bool = True,
             dtype=None, **kwargs) -> LoadedVLM:
    """Load ``(model, processor, family)`` for LLaVA-1.5, LLaVA-NeXT or Qwen2.5-VL.

    Args:
        name_or_path: local directory or hub id.
        download: allow downloading from the hub (default False: local files / cache only).
        processor: also load the processor (``None`` in the result if it cannot be loaded,
            with a warning).
        dtype: torch dtype for the weights (default: as saved / float32).
        kwargs: passed to ``from_pretrained`` of the model.

    Raises:
        FileNotFoundError: the model is neither a local directory nor in the cache (and
            ``download`` is False or the download failed).
        TypeError: the checkpoint is not one of the supported families.
    """
    import transformers
    from transformers import AutoConfig

    path = os.fspath(name_or_path)
    local = os.path.isdir(path)
    local_only = not download or kwargs.pop("local_files_only", False)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        where = "is not a directory and is not in the Hugging Face cache" if local_only else "could not be loaded"
        hint = "" if download else " (download=False: nothing is fetched; pass download=True to allow it)"
        raise FileNotFoundError(f"load_vlm: model {path!r} {where}{hint}: {exc}") from exc
    family = getattr(config, "model_type", None)
    if family not in SUPPORTED_FAMILIES:
        raise TypeError(
            f"load_vlm: {path!r} is a {family!r} model; supported families: {', '.join(SUPPORTED_FAMILIES)}"
        )
    cls = getattr(transformers, SUPPORTED_FAMILIES[family])
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = cls.from_pretrained(path, local_files_only=local_only, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(f"load_vlm: weights of {path!r} not found{'' if local else ' in the cache'}: {exc}") from exc
    model.eval()
    proc = None
    if processor:
        proc = _load_processor(path, local_only)
    return LoadedVLM(model, proc, family)


def _load_processor(path: str, local_only: bool):
    from transformers import AutoProcessor

    errors = []
    for extra in ({}, {"backend": "pil"}):
        try:
            return AutoProcessor.from_pretrained(path, local_files_only=local_only, **extra)
        except Exception as exc:  # noqa: BLE001 - processors fail in many ways (missing files, backends)
            errors.append(f"{type(exc).__name__}: {exc}")
    warnings.warn(f"load_vlm: no processor loaded for {path!r}: {errors[-1]}", stacklevel=3)
    return None
