"""``tokensel.load_vlm``: load a supported VLM (and its processor) exactly as saved, offline by default.

By default nothing is downloaded and no network connection is attempted: ``name_or_path`` must
be a local directory (as written by ``save_pretrained``) or a hub id already in the Hugging Face
cache, which is resolved by reading the cache folder only. Pass ``download=True`` to allow
fetching from the hub.

A checkpoint is refused (:class:`~tokensel.models.checkpoint.CheckpointError`, naming the file
and the tensors) when its ``config.json`` is unreadable, a safetensors file is corrupt or
truncated, a tensor is missing, unexpected or of the wrong shape (transformers would silently
re-initialise or drop it), or a weight is NaN or infinite.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from tokensel.models.checkpoint import (
    CheckpointError,
    check_finite,
    check_headers,
    check_loading_info,
    downloads_disabled,
    find_folder,
    looks_like_hub_id,
    read_config,
    weight_files,
)
from tokensel.models.registry import FamilyInfo, family_info, list_families

__all__ = ["CheckpointError", "LoadedVLM", "load_vlm"]

#: files one of which a processor needs (a tokenizer)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
#: from_pretrained arguments load_vlm sets itself
_RESERVED = {"output_loading_info": "load_vlm checks the loading report itself",
             "ignore_mismatched_sizes": "pass strict=False to load a checkpoint whose tensors do not match"}


class LoadedVLM(NamedTuple):
    """``(model, processor, family)``: the model in eval mode, its processor (``None`` only with
    ``processor=False``) and the ``config.model_type`` (a registered family,
    :func:`tokensel.models.list_families`)."""

    model: Any
    processor: Any | None
    family: str


class _Source(NamedTuple):
    ref: str  # what transformers is given: the local folder, or the hub id when downloading
    folder: Path  # the local folder holding (at least) config.json
    local: bool  # weights are read from ``folder`` without any network access
    cached: bool  # ``folder`` is a snapshot in the Hugging Face cache


def load_vlm(name_or_path: str | os.PathLike, *, download: bool = False, processor: bool = True,
             dtype: Any = None, strict: bool = True, local_files_only: bool | None = None,
             **kwargs: Any) -> LoadedVLM:
    """Load ``(model, processor, family)`` of a registered model family (built in: LLaVA-1.5,
    LLaVA-NeXT, Qwen2.5-VL; more with :func:`tokensel.models.register_adapter`).

    Args:
        name_or_path: local checkpoint directory, or hub id (``org/name``).
        download: allow downloading from the hub (default False: the local folder or the
            Hugging Face cache only, with no network access at all). ``HF_HUB_OFFLINE=1`` or
            ``TRANSFORMERS_OFFLINE=1`` in the environment also turn downloads off.
        processor: also load the processor (``AutoProcessor``); a checkpoint without one raises.
            ``False`` loads the model alone (``processor`` is ``None`` in the result).
        dtype: torch dtype for the weights (default: as transformers loads them, float32).
        strict: refuse checkpoints whose tensors are missing, unexpected, mis-shaped or
            non-finite (default). ``False`` loads them anyway with a warning.
        local_files_only: transformers' spelling of ``download=False``; ``True`` forbids
            downloads even with ``download=True``.
        kwargs: passed to ``from_pretrained`` of the model (``revision``, ``cache_dir`` and
            ``subfolder`` are also honoured when resolving a hub id in the cache).

    Raises:
        FileNotFoundError: no such directory, the hub id is not in the cache (downloads off) or
            could not be downloaded, or the folder lacks ``config.json``, weights or tokenizer.
        NotADirectoryError: ``name_or_path`` is a file.
        CheckpointError: the checkpoint exists but is unreadable or does not load as saved.
        TypeError: the checkpoint's ``model_type`` is not a registered family, or a bad argument.
        ValueError: contradictory arguments (``local_files_only=False`` with ``download=False``).
    """
    allowed, why_off = _downloads_allowed(download, local_files_only)
    for flag, value in (("processor", processor), ("strict", strict)):
        if not isinstance(value, bool):
            raise TypeError(f"load_vlm: {flag} must be True or False, got {value!r}")
    _check_kwargs(kwargs)
    source = _locate(name_or_path, allowed, why_off, kwargs)
    config = read_config(source.folder)
    family = _family(config, source.folder)
    _check_config(source.folder, family.family)
    quantized = "quantization_config" in config
    files = _local_weights(source, why_off, quantized)
    if dtype is not None:
        kwargs["dtype"] = dtype
    model, info = _from_pretrained(family, source, files, kwargs)
    if not files:  # downloaded just now: the files are checked once they are in the cache
        files = weight_files(source.folder)
        check_headers(files, quantized=quantized)
    problems = check_loading_info(info, source.folder, files, type(model).__name__)
    problems += check_finite(model, source.folder, files)
    _refuse(problems, strict)
    model.eval()
    proc = _load_processor(source, kwargs) if processor else None
    return LoadedVLM(model, proc, family.family)


def _downloads_allowed(download: bool, local_files_only: bool | None) -> tuple[bool, str]:
    """Whether the hub may be contacted, and if not, why (for the error messages)."""
    if not isinstance(download, bool):
        raise TypeError(f"load_vlm: download must be True or False, got {download!r}")
    if local_files_only is not None and not isinstance(local_files_only, bool):
        raise TypeError(f"load_vlm: local_files_only must be True, False or None, got {local_files_only!r}")
    if local_files_only is False and not download:
        raise ValueError("load_vlm: local_files_only=False asks for downloads but download=False; "
                         "pass download=True to allow them")
    if local_files_only:
        return False, "local_files_only=True: nothing is fetched"
    if not download:
        return False, "download=False: nothing is fetched; pass download=True to allow it"
    if downloads_disabled():
        return False, "HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set: nothing is fetched"
    return True, ""


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    for name, why in _RESERVED.items():
        if name in kwargs:
            raise TypeError(f"load_vlm: do not pass {name}: {why}")


def _locate(name_or_path: str | os.PathLike, allowed: bool, why_off: str, kwargs: dict[str, Any]) -> _Source:
    path = os.fspath(name_or_path)
    hub_id = isinstance(name_or_path, str) and looks_like_hub_id(path) and not os.path.exists(path)
    if allowed and hub_id:
        return _Source(path, _download_config(path, kwargs), local=False, cached=True)
    try:
        folder = find_folder(name_or_path, revision=kwargs.get("revision"), cache_dir=kwargs.get("cache_dir"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc} ({why_off})" if hub_id else str(exc)) from None
    sub = kwargs.pop("subfolder", None)
    folder = folder / sub if sub else folder
    return _Source(os.fspath(folder), folder, local=True, cached=hub_id)


def _download_config(repo_id: str, kwargs: dict[str, Any]) -> Path:
    from huggingface_hub import hf_hub_download

    keys = ("revision", "cache_dir", "token", "subfolder")
    try:
        config = hf_hub_download(repo_id, "config.json", **{k: kwargs[k] for k in keys if k in kwargs})
    except Exception as exc:  # hub errors (HTTP, connection, auth, not found) are many classes
        raise FileNotFoundError(f"load_vlm: could not download config.json of {repo_id!r}: "
                                f"{type(exc).__name__}: {exc}") from exc
    return Path(config).parent


def _family(config: dict[str, Any], folder: Path) -> FamilyInfo:
    family = config["model_type"]
    try:
        return family_info(family)
    except TypeError:
        raise TypeError(f"load_vlm: {folder / 'config.json'} is a {family!r} model; supported families "
                        f"(registered with tokensel.models.register_adapter): {', '.join(list_families())}") from None


def _check_config(folder: Path, family: str) -> None:
    """transformers must be able to build the config from ``config.json`` (types, ranges)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(os.fspath(folder), local_files_only=True)
    except Exception as exc:  # config validation raises many classes (strict dataclass errors)
        raise CheckpointError(f"load_vlm: {folder / 'config.json'} is not a valid {family} config: "
                              f"{type(exc).__name__}: {exc}") from exc


def _local_weights(source: _Source, why_off: str, quantized: bool) -> list[Path]:
    """The weights files of a local folder, with their headers checked ([] when downloading)."""
    if not source.local:
        return []
    try:
        files = weight_files(source.folder)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc} (in the cache; {why_off})" if source.cached else str(exc)) from None
    check_headers(files, quantized=quantized)
    return files


def _from_pretrained(family: FamilyInfo, source: _Source, files: list[Path], kwargs: dict[str, Any]) -> tuple[Any, dict]:
    from safetensors import SafetensorError
    from transformers import PreTrainedModel

    cls = family.resolve_model_class()
    cls_name = cls.__name__
    if not issubclass(cls, PreTrainedModel):
        raise TypeError(f"model family {family.family!r}: {cls_name} is not a transformers PreTrainedModel "
                        "(load_vlm loads with its from_pretrained)")
    try:
        # (model, loading info): transformers' annotation omits the output_loading_info=True form
        loaded: tuple[Any, dict] = cls.from_pretrained(  # type: ignore[assignment]
            source.ref, local_files_only=source.local, output_loading_info=True, ignore_mismatched_sizes=True,
            **kwargs,
        )
        return loaded
    except pickle.UnpicklingError as exc:  # torch's weights-only loader refused a pickle
        where = ", ".join(os.fspath(f) for f in files if f.suffix != ".safetensors") or source.ref
        first = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"load_vlm: {where} is a pickle checkpoint that torch's safe (weights-only) loader "
                              f"refuses: it holds objects other than tensors ({first}); if you trust it, convert it "
                              "to safetensors (model.save_pretrained after loading it yourself)") from exc
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, SafetensorError) as exc:
        where = ", ".join(os.fspath(f) for f in files) or source.ref
        raise CheckpointError(f"load_vlm: {cls_name} could not be loaded from {where}: "
                              f"{type(exc).__name__}: {exc}") from exc


def _refuse(problems: list[str], strict: bool) -> None:
    if not problems:
        return
    if strict:
        raise CheckpointError("\n".join(problems + ["(strict=False loads it anyway)"]))
    for problem in problems:
        warnings.warn(problem, stacklevel=3)


def _load_processor(source: _Source, kwargs: dict[str, Any]) -> Any:
    from transformers import AutoProcessor

    hub = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "subfolder") if k in kwargs and not source.local}
    errors: list[str] = []
    for extra in ({}, {"backend": "pil"}):  # "pil": image processors that need torchvision otherwise
        try:
            return AutoProcessor.from_pretrained(source.ref, local_files_only=source.local, **hub, **extra)
        except Exception as exc:  # processors fail in many ways (missing files, backends)
            message = f"{type(exc).__name__}: {exc}"
            errors += [message] if message not in errors else []
    if source.local and not any((source.folder / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(f"load_vlm: {source.folder} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); "
                                "save the processor with the model, or pass processor=False to load the model alone")
    raise CheckpointError(f"load_vlm: the processor of {source.folder} could not be loaded ({' | '.join(errors)}); "
                          "pass processor=False to load the model alone")
