"""One set of rules for every registry (tokensel.registry.Registry): selectors, solvers, model
families, datasets, the experiments' model builders. A taken name is refused naming both owners
(the zoo's model included), an unknown one lists the registered names, ``registered()`` holds a
registration for one block and puts back what it replaced, and a bad name is a TypeError."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokensel.experiments.datasets import DATASETS, register_dataset
from tokensel.experiments.modeling import MODELS, build_tiny_llava, register_model
from tokensel.models._base import VisionAdapter
from tokensel.models.registry import FAMILIES, register_adapter, registered_adapter
from tokensel.registry import DuplicateNameError, Registry, UnknownNameError
from tokensel.selectors import Selector, register_selector, registered
from tokensel.selectors.table import SELECTORS
from tokensel.solvers import SOLVERS, Solution, register_solver
from tokensel.solvers import registered as registered_solver


class _Keep(Selector):
    """First k tokens (test)."""

    def select(self, batch, k):  # pragma: no cover - never run
        raise AssertionError


class _Adapter(VisionAdapter):
    """A family adapter (test)."""


def _solve(objective: Any, k: int, *, tol: float | None = None) -> Solution:  # pragma: no cover - never run
    raise AssertionError


def _load(ds: Any) -> list:  # pragma: no cover - never run
    return []


def _build(model_cfg: Any) -> Any:  # pragma: no cover - never run
    return build_tiny_llava(model_cfg)


# name taken by a built-in -> registering that name again, for each kind
BUILTIN_CLASHES: dict[str, tuple[Registry[Any], Callable[[], object]]] = {
    "selector": (SELECTORS, lambda: register_selector("mmtok")(_Keep)),
    "solver": (SOLVERS, lambda: register_solver("lazy")(_solve)),
    "model family": (FAMILIES, lambda: register_adapter("llava", model_class="NotLlava")(_Adapter)),
    "dataset": (DATASETS, lambda: register_dataset("pope")(_load)),
    "model": (MODELS, lambda: register_model("shapes-llava")(_build)),
}


@pytest.mark.parametrize("kind", list(BUILTIN_CLASHES))
def test_a_builtin_is_never_replaced(kind):
    registry, register_again = BUILTIN_CLASHES[kind]
    before = dict(registry)
    with pytest.raises(DuplicateNameError, match=f"a {kind} named .* is already registered by tokensel\\..*; "
                                                  "refusing to replace it with .*test_registries"):
        register_again()
    assert dict(registry) == before  # nothing replaced, nothing added


def test_the_zoo_model_keeps_its_builder():
    original = MODELS["shapes-llava"]
    with pytest.raises(DuplicateNameError, match="'shapes-llava'"):
        register_model("shapes-llava")(build_tiny_llava)
    assert MODELS["shapes-llava"] is original and original is not build_tiny_llava


TEMPORARY: dict[str, Callable[[str], AbstractContextManager[Any]]] = {
    "selector": lambda name: registered(name, _Keep),
    "solver": lambda name: registered_solver(name, _solve),
    "model family": lambda name: registered_adapter(name, _Adapter, model_class=f"{name}Model"),
    "dataset": lambda name: DATASETS.registered(name, DATASETS["pope"]),
    "model": lambda name: MODELS.registered(name, build_tiny_llava),
}
REGISTRIES = {"selector": SELECTORS, "solver": SOLVERS, "model family": FAMILIES, "dataset": DATASETS, "model": MODELS}


@pytest.mark.parametrize("kind", list(TEMPORARY))
def test_registered_holds_a_name_for_one_block_only(kind):
    registry = REGISTRIES[kind]
    with TEMPORARY[kind]("test-temporary"):
        assert "test-temporary" in registry
        with pytest.raises(DuplicateNameError, match="'test-temporary'"), TEMPORARY[kind]("test-temporary"):
            pass  # pragma: no cover
        assert "test-temporary" in registry  # the refused inner block took nothing out
    assert "test-temporary" not in registry
    with pytest.raises(UnknownNameError, match=f"no {kind} named 'test-temporary' is registered"):
        registry.remove("test-temporary")


def test_registered_puts_back_what_it_replaced_even_after_an_error():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(KeyError), reg.registered("a", 2, replace=True):
        assert reg["a"] == 2
        raise KeyError("inside")
    assert dict(reg) == {"a": 1}


def test_unknown_names_list_the_registered_and_extra_names():
    reg: Registry[int] = Registry("thing")
    reg.add("b", 1)
    reg.add("a", 2)
    with pytest.raises(UnknownNameError, match="unknown thing name 'c'; available: a, b, z"):
        reg.lookup("c", also=["z"])
    assert isinstance(UnknownNameError(), ValueError) and isinstance(DuplicateNameError(), ValueError)
    assert reg.names() == ["a", "b"] and reg.owner("a") == "2"  # an int has no module.qualname: its repr


@given(st.one_of(st.just(""), st.integers(), st.none(), st.binary(), st.lists(st.text())))
def test_a_name_that_is_not_a_nonempty_str_is_a_type_error(name):
    reg: Registry[int] = Registry("thing")
    with pytest.raises(TypeError, match="thing name must be a non-empty str"):
        reg.add(name, 1)
    if not isinstance(name, str):
        with pytest.raises(TypeError, match="thing name must be a str"):
            reg.lookup(name)
    assert len(reg) == 0


@given(st.lists(st.text(min_size=1, max_size=4), max_size=12))
def test_a_registry_is_what_was_added_once(names):
    reg: Registry[int] = Registry("thing")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            with pytest.raises(DuplicateNameError):
                reg.add(name, i)
        else:
            seen[name] = reg.add(name, i)
    assert dict(reg) == seen and reg.names() == sorted(seen)


def test_every_kind_uses_the_one_helper():
    assert all(isinstance(r, Registry) for r in REGISTRIES.values())
    assert {r.kind for r in REGISTRIES.values()} == set(REGISTRIES)
