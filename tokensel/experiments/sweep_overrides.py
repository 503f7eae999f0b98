"""``key=value`` overrides of a sweep spec, applied as a user means them.

* ``grid.<axis>=[v1,v2]`` replaces (or adds) that axis of the grid; the axis is the whole rest
  of the key, dots included (``'grid.selector.name=[mmtok,divprune]'``);
* ``~grid.<axis>`` removes an axis;
* ``grid={budget.k: [4, 16]}`` replaces the whole grid; any other mapping or list value
  (``selector_params={...}``, ``points=[...]``, ``seeds=[0,1]``) replaces the node: nothing is
  merged into what the file holds;
* scalars set their key (``point=3``, ``name=mine``, ``cache_inputs=true``).

Values are YAML (``None``, as W&B agents write it, is null). Anything that cannot be parsed or
does not fit the spec is a :class:`~tokensel.experiments.config.ConfigError` naming the override.
"""

from __future__ import annotations

from typing import Any, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tokensel.experiments.config import ConfigError

__all__ = ["apply_sweep_overrides", "parse_override"]


def parse_override(text: str) -> tuple[str, Any]:
    """``"grid.budget.k=[4, 16]"`` -> ``("grid.budget.k", [4, 16])``; ``"~grid.x"`` ->
    ``("~grid.x", None)``."""
    if not isinstance(text, str):
        raise ConfigError(f"override {text!r}: must be a string key=value")
    if text.startswith("~"):
        if "=" in text or len(text) == 1:
            raise ConfigError(f"override {text!r}: a removal is ~grid.<axis>, without a value")
        return text, None
    key, sep, value = text.lstrip("+").partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: must look like key=value (e.g. seeds=[0,1] or 'grid.budget.k=[4,16]')")
    if value == "None":
        return key, None
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"override {text!r}: the value {value!r} is not valid YAML ({problem})") from None
    return key, parsed


def _set_axis(spec: DictConfig, override: str, axis: str, values: Any) -> None:
    if not axis:
        raise ConfigError(f"override {override!r}: give the axis, as grid.<config key>=[...]")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"override {override!r}: grid.{axis} must be a non-empty list of values, "
                          f"e.g. 'grid.{axis}=[a,b]'; got {values!r}")
    grid = dict(OmegaConf.to_container(spec.grid, resolve=False))
    grid[axis] = values
    spec.grid = grid


def _remove_axis(spec: DictConfig, override: str) -> None:
    key = override[1:]
    if not key.startswith("grid."):
        raise ConfigError(f"override {override!r}: only grid axes can be removed (~grid.<axis>)")
    axis = key[len("grid."):]
    grid = dict(OmegaConf.to_container(spec.grid, resolve=False))
    if axis not in grid:
        raise ConfigError(f"override {override!r}: the grid has no axis {axis!r} (axes: {', '.join(grid) or 'none'})")
    del grid[axis]
    spec.grid = grid


def _set_grid(spec: DictConfig, override: str, grid: Any) -> None:
    if not isinstance(grid, dict):
        raise ConfigError(f"override {override!r}: grid must be a mapping of config keys to lists, "
                          f"e.g. 'grid={{budget.k: [4, 16]}}'; got {grid!r}")
    for axis, values in grid.items():
        _set_axis(spec, override, str(axis), values)  # checks each axis
    spec.grid = {str(axis): values for axis, values in grid.items()}


def apply_sweep_overrides(spec: DictConfig, overrides: Sequence[str], where: str) -> DictConfig:
    """``spec`` (a structured :class:`~tokensel.experiments.sweep.SweepSpec` config) with
    ``overrides`` applied in order; ``where`` names the sweep file in error messages."""
    for text in overrides:
        key, value = parse_override(text)
        try:
            if key.startswith("~"):
                _remove_axis(spec, key)
            elif key == "grid":
                _set_grid(spec, text, value)
            elif key.startswith("grid."):
                _set_axis(spec, text, key[len("grid."):], value)
            else:
                OmegaConf.update(spec, key, value, merge=False)
        except OmegaConfBaseException as exc:
            msg = (getattr(exc, "msg", None) or str(exc)).strip().splitlines()[0]
            raise ConfigError(f"{where}: override {text!r}: {msg}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{where}: override {text!r}: {exc}") from None
    return spec
