"""API keys: minted once, stored hashed, checked through a short-lived cache.

Keys are 256-bit random tokens, so a single SHA-256 is a sound hash (no
password stretching is needed); the store is looked up by hash and the match
is confirmed with a constant-time comparison.

Each key can also carry an S3 access key id. SigV4 needs the secret on the
server, so it is not stored: it is ``HMAC(master, access key id)`` with a
master secret kept in a 0600 file; revoking the API key disables it too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aifactory.errors import Unauthorized
from aifactory.store import KeyRecord, Store
from aifactory.tenancy.roles import Action, check, grants

KEY_PREFIX = "aif-"
S3_ACCESS_KEY_PREFIX = "AKAF"
_CACHE_TTL_S = 5.0
_CACHE_MAX = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its tenant, its role and its scopes.

    ``services`` and ``buckets`` are the names a scoped key is limited to;
    None means every one its tenant may reach.
    """

    key_id: int
    tenant_id: int
    tenant: str
    role: str
    services: frozenset[str] | None = None
    buckets: frozenset[str] | None = None

    @property
    def is_admin(self) -> bool:
        """Whether the key may administer the whole factory."""
        return self.role == "admin"

    def may(self, action: Action) -> bool:
        """Whether the key's role allows ``action``."""
        return grants(self.role, action)

    def require(self, action: Action) -> None:
        """Returns when the key's role allows ``action``; raises Forbidden otherwise."""
        check(self.role, action)

    def reaches_service(self, name: str) -> bool:
        """Whether the key's scope includes service (or pool) ``name``."""
        return self.services is None or name in self.services

    def reaches_bucket(self, name: str) -> bool:
        """Whether the key's scope includes bucket ``name``."""
        return self.buckets is None or name in self.buckets


@dataclass(frozen=True)
class IssuedKey:
    """A freshly minted key; ``secret`` is shown once and never stored."""

    key_id: int
    tenant: str
    role: str
    secret: str
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""


@dataclass(frozen=True)
class KeyScope:
    """The services and buckets a key is limited to; None: all its tenant's."""

    services: tuple[str, ...] | None = None
    buckets: tuple[str, ...] | None = None


def hash_key(secret: str) -> str:
    """The hex SHA-256 of a key, as stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_key(
    store: Store,
    tenant: str,
    role: str = "member",
    name: str = "",
    expires_at: datetime | None = None,
    s3_master: bytes | None = None,
    scope: KeyScope = KeyScope(),
) -> IssuedKey:
    """Mint a key for ``tenant`` (created if missing) and store its hash.

    With ``s3_master`` the key also gets an S3 access key id and secret.
    """
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    tenant_id = store.ensure_tenant(tenant)
    key_id = store.add_key(
        tenant_id,
        hash_key(secret),
        secret[:10],
        role,
        name,
        expires_at,
        services=scope.services,
        buckets=scope.buckets,
    )
    if s3_master is None:
        return IssuedKey(key_id, tenant, role, secret)
    access_key_id = S3_ACCESS_KEY_PREFIX + secrets.token_hex(8).upper()
    store.add_s3_access_key(key_id, access_key_id)
    s3_secret = s3_secret_for(s3_master, access_key_id)
    return IssuedKey(key_id, tenant, role, secret, access_key_id, s3_secret)


def s3_secret_for(master: bytes, access_key_id: str) -> str:
    """The S3 secret access key of ``access_key_id`` (40 characters, like AWS's)."""
    digest = hmac.new(master, access_key_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()[:40]


def load_s3_master(path: Path) -> bytes:
    """The master secret S3 secrets derive from, created (mode 0600) on first use."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return bytes.fromhex(path.read_text().strip())
    master = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(master.hex() + "\n")
    return master


class KeyAuthenticator:
    """Maps a presented key to a Principal, caching lookups for a few seconds.

    A revoked key stops working within ``_CACHE_TTL_S`` seconds, an expiring
    one at its expiry.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        # Header value -> (valid until, principal) of keys that passed: the
        # gateway's hot path skips the coroutine and the hash for them.
        self._passed: dict[str, tuple[float, Principal]] = {}

    def passed(self, authorization: str) -> Principal | None:
        """The Principal of a header that passed within the cache's time; None otherwise."""
        entry = self._passed.get(authorization)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    async def authenticate_header(self, authorization: str) -> Principal:
        """The Principal of an ``Authorization: Bearer KEY`` header value.

        Raises:
            Unauthorized: no bearer key, or an unknown or revoked one.
        """
        known = self.passed(authorization)
        if known is not None:
            return known
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized(
                "You didn't provide an API key.",
                fix="send `Authorization: Bearer KEY` (api_key=KEY in OpenAI clients)",
            )
        principal = await self.authenticate(secret.strip())
        if principal is None:
            raise Unauthorized(
                "Incorrect API key provided: it is unknown, revoked or expired.",
                fix="use a key from `aifactory keys create --tenant NAME`",
            )
        cached = self._cache.get(hash_key(secret.strip()))
        if cached is not None:
            if len(self._passed) >= _CACHE_MAX:
                self._passed.clear()
            self._passed[authorization] = (cached[0], principal)
        return principal

    async def authenticate(self, secret: str) -> Principal | None:
        """Return the key's Principal, or None for an unknown or revoked key."""
        digest = hash_key(secret)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return await asyncio.to_thread(self._lookup, digest)

    def authenticate_blocking(self, secret: str) -> Principal | None:
        """``authenticate`` for threads that may block on the store (the functions broker)."""
        return self._lookup(hash_key(secret))

    def _lookup(self, digest: str) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = self._store.key_by_hash(digest)
        principal = _principal(record, digest)
        ttl = _CACHE_TTL_S
        if principal is not None and record is not None and record.expires_at is not None:
            ttl = min(ttl, (record.expires_at - datetime.now(UTC)).total_seconds())
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + ttl, principal)
        return principal


def _principal(record: KeyRecord | None, digest: str) -> Principal | None:
    if record is None or record.revoked:
        return None
    if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
        return None
    if not hmac.compare_digest(record.key_hash, digest):
        return None
    return Principal(
        record.key_id,
        record.tenant_id,
        record.tenant,
        record.role,
        None if record.services is None else frozenset(record.services),
        None if record.buckets is None else frozenset(record.buckets),
    )
