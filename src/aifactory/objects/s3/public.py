"""What the object store asks whoever publishes prefixes of buckets (the catalog).

A small seam so that the catalog, which sits above the object store, can
open prefixes to unsigned reads without the object store importing it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["PublicPrefixes"]


class PublicPrefixes(Protocol):
    """Says whether a key of a bucket is published for anyone to read."""

    async def is_public(self, bucket: str, owner_tenant_id: int, key: str) -> bool:
        """Whether ``key`` of ``bucket``, owned by tenant ``owner_tenant_id``, is public.

        The owner is part of the question: a prefix published by a bucket's
        former owner must not open the files of a new bucket of that name.
        """
