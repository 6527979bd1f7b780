"""``catalog:TENANT/NAME[@VERSION]``: a catalog entry named from a spec.

A reference is pinned when it is resolved (its version fixed to the one
read), so what a job or service used stays known after the entry moves on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aifactory.specs import CATALOG_REFERENCE_PATTERN

__all__ = ["CATALOG_SCHEME", "Reference"]

CATALOG_SCHEME = "catalog:"
_REFERENCE = re.compile(CATALOG_REFERENCE_PATTERN)


@dataclass(frozen=True)
class Reference:
    """An entry of a tenant, at one version or (None) its latest."""

    tenant: str
    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """The reference ``text`` spells.

        Raises:
            ValueError: it is not ``catalog:TENANT/NAME`` or ``catalog:TENANT/NAME@VERSION``.
        """
        if not _REFERENCE.match(text):
            raise ValueError(
                f"{text!r} is not a catalog reference: write catalog:TENANT/NAME "
                "or catalog:TENANT/NAME@VERSION"
            )
        where, _, version = text.removeprefix(CATALOG_SCHEME).partition("@")
        tenant, _, name = where.partition("/")
        return cls(tenant, name, int(version) if version else None)

    @property
    def entry(self) -> str:
        """``TENANT/NAME``."""
        return f"{self.tenant}/{self.name}"

    def __str__(self) -> str:
        suffix = f"@{self.version}" if self.version is not None else ""
        return f"{CATALOG_SCHEME}{self.entry}{suffix}"
