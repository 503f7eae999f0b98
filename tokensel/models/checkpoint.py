"""What a checkpoint folder must be before :func:`tokensel.load_vlm` trusts it.

Every check here raises an error that names the folder or file and the tensors at fault:

- :func:`find_folder` turns ``name_or_path`` into a local folder without touching the network
  (a directory, or a hub id resolved through the local Hugging Face cache only);
- :func:`read_config` reads ``config.json`` itself, so that an unreadable file or an unknown
  ``model_type`` is reported as such;
- :func:`weight_files` and :func:`check_headers` find the weights files and open every
  safetensors header (a truncated or corrupt file is named before transformers reads it);
- :func:`check_loading_info` refuses missing, unexpected or mis-shaped tensors (transformers
  would re-initialise or drop them silently);
- :func:`check_finite` refuses NaN or infinite weights (one ``isfinite`` pass per tensor).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "find_folder", "looks_like_hub_id", "downloads_disabled", "read_config",
           "weight_files", "check_headers", "check_loading_info", "check_finite"]

#: names transformers looks for, in its order of preference
SAFE_SINGLE, SAFE_INDEX, TORCH_SINGLE, TORCH_INDEX = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_SHOWN = 8  # tensor names listed in one message


class CheckpointError(ValueError):
    """A checkpoint that exists but cannot be used as saved: unreadable ``config.json``,
    corrupt or truncated weights, missing / unexpected / mis-shaped / non-finite tensors."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def downloads_disabled() -> bool:
    """True when the environment forbids hub access (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    env = _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or env


def looks_like_hub_id(name: str) -> bool:
    """``name`` has the shape of a hub id (``org/name`` or ``name``), not of a filesystem path."""
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and "--" not in name


def _cached_snapshot(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    cache = None if cache_dir is None else Path(cache_dir)
    hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision)
    return Path(hit).parent if isinstance(hit, str) else None


def find_folder(name_or_path: str | os.PathLike, *, revision: str | None = None,
                cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder of a checkpoint: the directory itself, or the cached snapshot of a hub id.

    Reads only the filesystem (``huggingface_hub.try_to_load_from_cache``): no network access.

    Raises:
        NotADirectoryError: ``name_or_path`` is a file.
        FileNotFoundError: no such directory, and (for a hub id) not in the cache.
    """
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return Path(path)
    if os.path.exists(path):
        raise NotADirectoryError(f"load_vlm: {path!r} is a file; give the checkpoint folder (the directory "
                                 "that holds config.json and the weights)")
    if isinstance(name_or_path, str) and looks_like_hub_id(path):
        snapshot = _cached_snapshot(path, revision, cache_dir)
        if snapshot is not None:
            return snapshot
        from huggingface_hub import constants

        cache = os.fspath(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE
        raise FileNotFoundError(
            f"load_vlm: {path!r} is not a local directory and is not in the Hugging Face cache "
            f"({cache}, revision {revision or 'main'}: no config.json cached)")
    raise FileNotFoundError(f"load_vlm: no checkpoint folder at {path!r} ({os.path.abspath(path)} does not exist)")


def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return ", ".join(names) or "(empty)"


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of ``folder`` as a dict.

    Raises:
        FileNotFoundError: no ``config.json`` in the folder.
        CheckpointError: the file is not UTF-8 JSON, not an object, or has no ``model_type``.
    """
    file = folder / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"load_vlm: {folder} has no config.json (files: {_listing(folder)})")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"load_vlm: {file} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"load_vlm: {file} holds a JSON {type(config).__name__}, expected an object")
    if not isinstance(config.get("model_type"), str):
        raise CheckpointError(f"load_vlm: {file} has no 'model_type' string (got {config.get('model_type')!r})")
    return config


def _index_shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"load_vlm: {index} is not a readable shard index (JSON with a 'weight_map'): "
                              f"{exc!r}") from exc
    missing = [n for n in names if not (index.parent / n).is_file()]
    if missing:
        raise CheckpointError(f"load_vlm: {index} lists shard file(s) that are missing: {', '.join(missing)}")
    return [index.parent / n for n in names]


def weight_files(folder: Path) -> list[Path]:
    """The weights files transformers will read from ``folder`` (same order of preference).

    Raises:
        FileNotFoundError: no weights file.
        CheckpointError: a shard index that is unreadable or names absent shards.
    """
    for single, index in ((SAFE_SINGLE, SAFE_INDEX), (TORCH_SINGLE, TORCH_INDEX)):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            return _index_shards(folder / index)
    raise FileNotFoundError(f"load_vlm: {folder} has no weights ({SAFE_SINGLE}, {SAFE_INDEX} or {TORCH_SINGLE}; "
                            f"files: {_listing(folder)})")


#: integer tensors an unquantised checkpoint may hold (index buffers, not weights)
_INTEGER_BUFFERS = ("position_ids", "num_batches_tracked")
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def _header_dtypes(file: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(file), framework="pt") as handle:
            return {key: handle.get_slice(key).get_dtype() for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"load_vlm: {file} is not a valid safetensors file (corrupt or truncated?): "
                              f"{exc}") from exc


def check_headers(files: Iterable[Path], *, quantized: bool = False) -> None:
    """Open every safetensors file's header: it must parse, cover the whole file and, unless the
    checkpoint is quantised, store its weights in floating dtypes (an integer dtype would load
    the weights' bits as integers: finite, wrong values).

    Raises:
        CheckpointError: naming the corrupt or truncated file, or the tensors of integer dtype.
    """
    for file in files:
        if file.suffix != ".safetensors":
            continue
        dtypes = _header_dtypes(file)
        odd = [f"{key} ({dtype})" for key, dtype in dtypes.items()
               if dtype not in _FLOAT_DTYPES and not key.endswith(_INTEGER_BUFFERS)]
        if odd and not quantized:
            raise CheckpointError(f"load_vlm: {file} stores weights in non-floating dtypes and config.json has no "
                                  f"quantization_config: {_shown(odd)}")


def _shown(names: Iterable[Any]) -> str:
    names = sorted(map(str, names))
    more = f" ... and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def loading_problems(info: Mapping[str, Any]) -> list[str]:
    """What ``from_pretrained(..., output_loading_info=True)`` reports as not loaded as saved."""
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing tensors (transformers would initialise them randomly): {_shown(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected tensors (the model has no such weights): {_shown(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        shapes = [f"{k} {tuple(a)} in the file vs {tuple(b)} in the model" for k, a, b in info["mismatched_keys"]]
        problems.append(f"tensors of the wrong shape: {_shown(shapes)}")
    if info.get("error_msgs"):
        problems.append(f"loading errors: {'; '.join(map(str, info['error_msgs']))}")
    return problems


def _where(folder: Path, files: list[Path]) -> str:
    return f"{folder} (weights: {', '.join(f.name for f in files) or '?'})"


def check_loading_info(info: Mapping[str, Any], folder: Path, files: list[Path], cls_name: str) -> list[str]:
    """Problems of a load, as messages (empty when every tensor loaded as saved)."""
    problems = loading_problems(info)
    return [f"load_vlm: the checkpoint {_where(folder, files)} does not match {cls_name}: {p}" for p in problems]


def _non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    bad = []
    for name, tensor in tensors:
        if tensor.is_floating_point() and not tensor.is_meta and not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    return bad


def _non_finite_in_files(files: list[Path]) -> dict[str, list[str]]:
    from safetensors import safe_open

    found = {}
    for file in files:
        if file.suffix != ".safetensors":
            continue
        with safe_open(os.fspath(file), framework="pt") as handle:
            bad = _non_finite((key, handle.get_tensor(key)) for key in handle.keys())
        if bad:
            found[file.name] = bad
    return found


def check_finite(model: torch.nn.Module, folder: Path, files: list[Path]) -> list[str]:
    """Problems if any weight of ``model`` is NaN or infinite (one pass over its state dict).

    Only on failure are the files read again, to name the file and its tensors; a checkpoint
    whose files are finite but whose weights overflow in the requested dtype says so.
    """
    bad = _non_finite(model.state_dict().items())
    if not bad:
        return []
    in_files = _non_finite_in_files(files)
    if in_files:
        where = "; ".join(f"{folder / name}: {_shown(keys)}" for name, keys in in_files.items())
        return [f"load_vlm: non-finite (NaN or inf) weights in the checkpoint: {where}"]
    if any(f.suffix != ".safetensors" for f in files):
        return [f"load_vlm: non-finite (NaN or inf) weights after loading {_where(folder, files)}: {_shown(bad)}"]
    dtype = next(iter(model.parameters())).dtype
    return [f"load_vlm: the weights of {_where(folder, files)} are finite as saved but become NaN or inf "
            f"in {dtype} (values out of range): {_shown(bad)}; load in a wider dtype"]
