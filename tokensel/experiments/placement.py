"""In-LLM selectors at their original's relative depth, from an experiment config.

Two OmegaConf resolvers apply :func:`tokensel.selectors.placement.relative_layer` (the one
placement rule) to the decoder depth of the config's model::

    selector:
      params:
        layer: ${relative_layer:${model.name},2}            # FastV's K = 2 of 32
        layers: ${relative_layers:${model.name},[2,6,15]}   # SparseVLM's scoring layers

``load_config`` resolves them, so a run's saved ``config.yaml`` holds the placed numbers. The
depth is read from the model's ``config.json`` (a shipped zoo model or a checkpoint folder;
``text_config.num_hidden_layers``, or ``num_hidden_layers`` for a text-only config).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf

from tokensel.selectors.placement import relative_layer, relative_layers

__all__ = ["decoder_depth", "register_resolvers"]


def _config_json(model: str) -> Path:
    import tokensel.zoo as zoo

    if model in zoo.list():
        return zoo.weights_dir(model) / "config.json"
    folder = Path(model)
    if (folder / "config.json").is_file():
        return folder / "config.json"
    raise ValueError(f"relative_layer: the decoder depth of model {model!r} is unknown (not a shipped zoo model "
                     "nor a folder with a config.json); give the layers as numbers")


def decoder_depth(model: str) -> int:
    """Number of decoder layers of ``model`` (a zoo name or a checkpoint folder)."""
    cfg = json.loads(_config_json(str(model)).read_text())
    text = cfg.get("text_config") or cfg
    if "num_hidden_layers" not in text:
        raise ValueError(f"relative_layer: {model!r}'s config.json states no num_hidden_layers")
    return int(text["num_hidden_layers"])


def _layer(model: str, layer: int) -> int:
    return relative_layer(layer, decoder_depth(model))


def _layers(model: str, layers: Any) -> list[int]:
    if isinstance(layers, ListConfig):
        layers = OmegaConf.to_container(layers)
    return list(relative_layers(layers, decoder_depth(model)))


def register_resolvers() -> None:
    """Register ``relative_layer`` and ``relative_layers`` (idempotent)."""
    for name, fn in (("relative_layer", _layer), ("relative_layers", _layers)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_resolver(name, fn)
