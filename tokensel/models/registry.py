"""Model-family registry: ``@register_adapter`` ties a ``config.model_type`` and a transformers
model class to the :class:`~tokensel.models._base.VisionAdapter` that prunes it.

It is the one table that :func:`tokensel.prune` (through :func:`adapter_for`) and
:func:`tokensel.load_vlm` read. A new VLM family is one module::

    @register_adapter("my_family", model_class="MyFamilyForConditionalGeneration")
    class MyFamilyAdapter(VisionAdapter):
        ...

``model_class`` is a class name exported by ``transformers`` (resolved when ``load_vlm`` needs
it) or the class itself. A model instance is matched by its class or the nearest registered base
class (its MRO), so subclasses of a registered class are handled by that class's adapter unless
registered themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, TypeVar

from torch import nn

from tokensel.models._base import VisionAdapter
from tokensel.registry import DuplicateNameError, Registry, owner_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "FAMILIES", "FamilyInfo", "register_adapter", "unregister_adapter", "registered_adapter", "family_info",
    "list_families", "adapter_for",
]

A = TypeVar("A", bound=type[VisionAdapter])


@dataclass(frozen=True)
class FamilyInfo:
    """One registered model family.

    Attributes:
        family: the ``config.model_type`` of its checkpoints (``"llava"``, ``"qwen2_5_vl"``, ...).
        model_class: the transformers model class, or its name in the ``transformers`` namespace.
        adapter: the :class:`VisionAdapter` subclass that prunes it.
    """

    family: str
    model_class: str | type
    adapter: type[VisionAdapter]

    @property
    def class_name(self) -> str:
        return self.model_class if isinstance(self.model_class, str) else self.model_class.__name__

    def resolve_model_class(self) -> type:
        """The model class (imported from ``transformers`` when registered by name)."""
        if not isinstance(self.model_class, str):
            return self.model_class
        import transformers

        return getattr(transformers, self.model_class)

    def matches(self, cls: type) -> bool:
        """Whether ``cls`` is this family's model class (by identity, or by name)."""
        if isinstance(self.model_class, str):
            return cls.__name__ == self.model_class
        return cls is self.model_class


#: The registered model families by ``config.model_type`` (a :class:`tokensel.registry.Registry`).
FAMILIES: Registry[FamilyInfo] = Registry("model family", owner=lambda info: owner_of(info.adapter))


def register_adapter(family: str, *, model_class: str | type) -> Callable[[A], A]:
    """Class decorator registering a :class:`VisionAdapter` subclass for ``family`` (a
    ``config.model_type``) and ``model_class``; sets the adapter's ``family`` attribute.

    :class:`~tokensel.registry.DuplicateNameError` if ``family`` or ``model_class`` is already
    registered (see :func:`unregister_adapter`, :func:`registered_adapter`)."""
    if not isinstance(family, str) or not family:
        raise TypeError(f"register_adapter: family must be a non-empty str (a config.model_type), got {family!r}")
    if not (isinstance(model_class, str) and model_class) and not isinstance(model_class, type):
        raise TypeError(f"register_adapter: model_class must be a class or a transformers class name, "
                        f"got {model_class!r}")

    def decorator(cls: A) -> A:
        FAMILIES.add(family, _info(family, model_class, cls))
        cls.family = family
        return cls

    return decorator


def _info(family: str, model_class: str | type, cls: object) -> FamilyInfo:
    if not (isinstance(cls, type) and issubclass(cls, VisionAdapter)):
        raise TypeError(f"register_adapter expects a VisionAdapter subclass, got {cls!r}")
    info = FamilyInfo(family, model_class, cls)
    for other in FAMILIES.values():
        if other.family != family and other.class_name == info.class_name:
            raise DuplicateNameError(f"register_adapter: {family!r} ({info.class_name}) clashes with the registered "
                                     f"family {other.family!r} ({other.class_name}, {other.adapter.__name__})")
    return info


def unregister_adapter(family: str) -> None:
    """Remove a registered family (for tests and plug-ins that replace a built-in adapter)."""
    FAMILIES.remove(family)


@contextmanager
def registered_adapter(family: str, adapter: type[VisionAdapter], *, model_class: str | type) -> Iterator[FamilyInfo]:
    """Context manager: ``adapter`` registered for ``family`` inside the block only."""
    with FAMILIES.registered(family, _info(family, model_class, adapter)) as info:
        adapter.family = family
        yield info


def list_families() -> list[str]:
    """The registered ``config.model_type`` names, sorted."""
    return FAMILIES.names()


def _known() -> str:
    return ", ".join(f"{f.family} ({f.class_name})" for f in sorted(FAMILIES.values(), key=lambda f: f.family))


def family_info(family: str) -> FamilyInfo:
    """The registration of a ``config.model_type``; ``TypeError`` listing the registered ones
    (a checkpoint of an unsupported type, rather than an unknown name)."""
    info = FAMILIES.get(family)
    if info is None:
        raise TypeError(f"model family {family!r} is not registered; registered families: {_known()} "
                        "(add one with tokensel.models.register_adapter)")
    return info


def family_of(model: nn.Module) -> FamilyInfo:
    """The registration matching ``model``'s class or its nearest registered base class."""
    for cls in type(model).__mro__:
        for info in FAMILIES.values():
            if info.matches(cls):
                return info
    raise TypeError(
        f"tokensel.prune does not support {type(model).__name__}; registered families: {_known()} "
        "(load the *ForConditionalGeneration class, e.g. with tokensel.load_vlm, or register an adapter "
        "with tokensel.models.register_adapter)"
    )


def adapter_for(model: PreTrainedModel) -> VisionAdapter:
    """The adapter of a model instance of a registered family; ``TypeError`` otherwise."""
    return family_of(model).adapter(model)
