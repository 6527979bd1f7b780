"""Where buckets' CORS configurations live: a file each, cached for a few seconds.

A configuration is kept under ``ROOT/.aifactory/cors/`` with the creation
time of the bucket (its row) it was set on, so a bucket deleted and created
again starts without the old one's rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable

from aifactory.objects.errors import S3Error
from aifactory.objects.s3.cors import CorsRule, configuration_document, parse_configuration
from aifactory.store import BucketRecord

_CACHE_TTL_S = 5.0
_CACHE_MAX = 10_000


class CorsConfigurations:
    """The buckets' CORS rules on disk, cached for a few seconds.

    Args:
        system_dir: The control plane's own directory under the root.
        record: The bucket's row (cached), whose creation time tells one
            bucket from a later one of the same name.
    """

    def __init__(
        self, system_dir: str, record: Callable[[str], Awaitable[BucketRecord | None]]
    ) -> None:
        self._dir = os.path.join(system_dir, "cors")
        self._record = record
        self._cache: dict[str, tuple[float, str, tuple[CorsRule, ...]]] = {}

    async def stamp(self, bucket: str) -> str:
        """What tells this bucket from an earlier one of the same name."""
        record = await self._record(bucket)
        return record.created_at.isoformat() if record is not None else ""

    async def rules(self, bucket: str) -> tuple[CorsRule, ...]:
        """The bucket's rules (none: no configuration)."""
        now = time.monotonic()
        stamp = await self.stamp(bucket)
        cached = self._cache.get(bucket)
        if cached is None or cached[0] <= now or cached[1] != stamp:
            rules = await asyncio.to_thread(self._load, bucket, stamp)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            cached = (now + _CACHE_TTL_S, stamp, rules)
            self._cache[bucket] = cached
        return cached[2]

    def _load(self, bucket: str, stamp: str) -> tuple[CorsRule, ...]:
        try:
            with open(os.path.join(self._dir, bucket + ".json"), "rb") as handle:
                saved = json.load(handle)
            if saved["stamp"] != stamp:
                return ()
            return parse_configuration(saved["xml"].encode())
        except (OSError, ValueError, KeyError, S3Error):
            return ()

    def save(self, bucket: str, stamp: str, rules: tuple[CorsRule, ...]) -> None:
        """Keep ``rules`` as the configuration of the bucket ``stamp`` names (blocking)."""
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        saved = {"stamp": stamp, "xml": configuration_document(rules).decode()}
        path = os.path.join(self._dir, bucket + ".json")
        temporary = f"{path}.{secrets.token_hex(6)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(saved, handle)
        os.replace(temporary, path)
        self._cache.pop(bucket, None)

    def drop(self, bucket: str) -> None:
        """Forget the bucket's configuration (blocking)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._dir, bucket + ".json"))
        self._cache.pop(bucket, None)
