"""Bytes a tenant holds outside its buckets' trees, which its bytes quota counts too.

The catalog keeps old versions' files after the bucket replaced them: those
bytes are the tenant's as much as its objects are. The objects service asks
through this small interface and knows nothing of who answers.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["OtherHoldings"]


class OtherHoldings(Protocol):
    """What else holds a tenant's bytes, beside its buckets."""

    def bytes_held(self, tenant_id: int) -> int:
        """The bytes held for ``tenant_id`` outside its buckets (blocking)."""
        ...
