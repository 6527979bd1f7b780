"""What a site lets its tenants set in a spec they deploy themselves.

Site admins may set anything. A tenant's own key may not set a field the
site forbids (a dotted path as written in a spec, e.g. ``slurm.options``),
and may name only the Slurm partitions and QOS and the image prefixes the
site allows. A field counts as set when its value differs from the default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from aifactory.errors import SpecError

if TYPE_CHECKING:
    from aifactory.config import Settings

__all__ = ["SpecPolicy"]


@dataclass(frozen=True)
class SpecPolicy:
    """The site's rule for tenants' specs.

    Args:
        forbidden: Dotted field paths tenants may not set.
        partitions: The Slurm partitions tenants may name; empty: any.
        qos: The Slurm QOS tenants may name; empty: any.
        images: Image prefixes tenants' Kubernetes jobs may use; empty: any.
    """

    forbidden: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()
    qos: tuple[str, ...] = ()
    images: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> SpecPolicy:
        """The policy the site's settings (``AIFACTORY_TENANT_*``) describe."""
        return cls(
            settings.tenant_forbidden_fields,
            settings.tenant_partitions,
            settings.tenant_qos,
            settings.tenant_images,
        )

    def check(self, spec: BaseModel) -> None:
        """Returns when a tenant may deploy ``spec``.

        Raises:
            SpecError: naming the first field the site does not let tenants set.
        """
        for path in self.forbidden:
            found = _set_value(spec, path.split("."))
            if found is not None:
                raise SpecError(
                    f"{path}: this site does not let tenants set it.",
                    fix="remove it from the spec, or ask a site admin to deploy it",
                )
        _allowed(spec, "slurm.partition", self.partitions, lambda v, a: v in a)
        _allowed(spec, "slurm.qos", self.qos, lambda v, a: v in a)
        _allowed(spec, "kubernetes.image", self.images, lambda v, a: v.startswith(a))


def _allowed(spec: BaseModel, path: str, allowed: tuple[str, ...], fits: Any) -> None:
    value = _set_value(spec, path.split("."))
    if not allowed or value is None or any(fits(value, entry) for entry in allowed):
        return
    raise SpecError(
        f"{path}: {value!r} is not one tenants may use here.",
        fix=f"use one of {', '.join(allowed)}, or leave it out",
    )


def _set_value(model: BaseModel, path: Iterable[str]) -> Any:
    """The value at ``path`` in ``model`` when it differs from its default, else None."""
    *parents, last = path
    for segment in parents:
        name = _field(model, segment)
        child = getattr(model, name) if name else None
        if not isinstance(child, BaseModel):
            return None
        model = child
    name = _field(model, last)
    if name is None:
        return None
    value = getattr(model, name)
    default = type(model).model_fields[name].get_default(call_default_factory=True)
    return None if value == default else value


def _field(model: BaseModel, segment: str) -> str | None:
    """The field of ``model`` a spec names ``segment`` (its name or its alias)."""
    for name, info in type(model).model_fields.items():
        if segment in (name, info.alias):
            return name
    return None
