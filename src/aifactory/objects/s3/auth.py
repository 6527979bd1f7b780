"""Who sent an S3 request: SigV4 (header or presigned query) or SigV2 presigned query.

::

    Authorization: AWS4-HMAC-SHA256 ...   -> header SigV4, payload per x-amz-content-sha256
    ?X-Amz-Algorithm=AWS4-HMAC-SHA256&... -> presigned SigV4 (X-Amz-Expires <= 7 days)
    ?AWSAccessKeyId=...&Signature=...     -> presigned SigV2 (boto3's default presign)
    nothing                               -> the anonymous caller (public reads only)

The outcome names the caller and says how the body must be checked while it
streams in (``PayloadCheck``).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol

from aifactory.objects.errors import S3Error
from aifactory.objects.s3 import sigv2, sigv4
from aifactory.objects.s3.request import S3Request
from aifactory.store import KeyRecord, Store
from aifactory.tenancy import s3_secret_for

MAX_PRESIGN_EXPIRY_S = 7 * 24 * 3600
MAX_CLOCK_SKEW = timedelta(minutes=15)
_CACHE_TTL_S = 5.0
_CACHE_MAX = 10_000
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Caller:
    """The tenant behind a verified S3 request, its key's role and bucket scope.

    ``buckets``: the buckets a scoped key is limited to; None, every one its
    tenant may reach.
    """

    access_key_id: str
    tenant_id: int
    tenant: str
    is_admin: bool
    key_id: int | None = None
    role: str = "member"
    buckets: frozenset[str] | None = None

    def reaches(self, bucket: str) -> bool:
        """Whether the key's scope includes ``bucket``."""
        return self.buckets is None or bucket in self.buckets

    @property
    def anonymous(self) -> bool:
        """Whether the request carried no signature at all."""
        return self.role == ANONYMOUS_ROLE


ANONYMOUS_ROLE = "anonymous"
ANONYMOUS = Caller("", 0, "", is_admin=False, role=ANONYMOUS_ROLE, buckets=frozenset())


@dataclass
class PayloadCheck:
    """How the request body is to be verified as it streams.

    ``sha256``: the hex digest the body must have (None: unsigned).
    ``chunked``: the body is ``aws-chunked``; ``signer`` checks its chunk signatures.
    """

    sha256: str | None = None
    chunked: bool = False
    signer: sigv4.ChunkSigner | None = None


class Credentials(Protocol):
    """Maps an access key id to its caller and secret."""

    async def lookup(self, access_key_id: str) -> tuple[Caller, str] | None:
        """The caller and secret of ``access_key_id``; None when unknown or revoked."""


class StoreCredentials:
    """S3 credentials of the tenants' API keys, cached for a few seconds.

    A revoked API key stops working for S3 within ``_CACHE_TTL_S`` seconds,
    an expiring one at its expiry.
    """

    def __init__(self, store: Store, master: bytes) -> None:
        self._store = store
        self._master = master
        self._cache: dict[str, tuple[float, tuple[KeyRecord, Caller, str] | None]] = {}

    async def lookup(self, access_key_id: str) -> tuple[Caller, str] | None:
        """The caller and derived secret of an unrevoked key's access key id.

        Caller and secret are cached with the record: deriving the secret is
        an HMAC, and every request would otherwise pay for it.
        """
        now = time.monotonic()
        cached = self._cache.get(access_key_id)
        if cached is None or cached[0] <= now:
            record = await asyncio.to_thread(self._store.key_by_s3_access_key, access_key_id)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            cached = (now + _CACHE_TTL_S, self._entry(access_key_id, record))
            self._cache[access_key_id] = cached
        if cached[1] is None:
            return None
        record, caller, secret = cached[1]
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            return None
        return caller, secret

    def _entry(
        self, access_key_id: str, record: KeyRecord | None
    ) -> tuple[KeyRecord, Caller, str] | None:
        if record is None or record.revoked:
            return None
        caller = Caller(
            access_key_id,
            record.tenant_id,
            record.tenant,
            record.role == "admin",
            record.key_id,
            record.role,
            None if record.buckets is None else frozenset(record.buckets),
        )
        return record, caller, s3_secret_for(self._master, access_key_id)


async def authenticate(
    request: S3Request, credentials: Credentials, now: datetime | None = None
) -> tuple[Caller, PayloadCheck]:
    """Verify the request's signature.

    Raises:
        S3Error: AccessDenied (expired, or an unknown scheme), InvalidAccessKeyId,
            SignatureDoesNotMatch, RequestTimeTooSkewed, or a malformed-auth error.
    """
    now = now or datetime.now(UTC)
    authorization = request.header("authorization")
    if authorization.startswith(sigv4.ALGORITHM):
        return await _header_v4(request, authorization, credentials, now)
    if request.params.get("X-Amz-Algorithm") == sigv4.ALGORITHM:
        return await _query_v4(request, credentials, now)
    if "AWSAccessKeyId" in request.params and "Signature" in request.params:
        return await _query_v2(request, credentials, now)
    if authorization:
        raise S3Error(
            "AccessDenied",
            "Only AWS Signature Version 4 (and SigV2 presigned URLs) are accepted.",
            fix="configure the client for signature version s3v4",
        )
    return ANONYMOUS, PayloadCheck()


async def _secret(credentials: Credentials, access_key_id: str) -> tuple[Caller, str]:
    found = await credentials.lookup(access_key_id)
    if found is None:
        raise S3Error(
            "InvalidAccessKeyId",
            f"The access key id {access_key_id!r} does not exist or was revoked.",
            fix="use a pair from `aifactory keys create`",
        )
    return found


async def _header_v4(
    request: S3Request, authorization: str, credentials: Credentials, now: datetime
) -> tuple[Caller, PayloadCheck]:
    fields = sigv4.parse_authorization(authorization)
    credential = sigv4.parse_credential(fields["Credential"]) if fields else None
    if fields is None or credential is None:
        raise S3Error("InvalidArgument", "The Authorization header is malformed.")
    amz_date = request.header("x-amz-date") or _amz_date_of_http_date(request.header("date"))
    signed_at = sigv4.parse_amz_date(amz_date)
    if signed_at is None:
        raise S3Error("AccessDenied", "The request has no valid x-amz-date or Date header.")
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        raise S3Error("RequestTimeTooSkewed", fix="synchronise the client's clock (NTP)")
    payload_hash = request.header("x-amz-content-sha256")
    if not payload_hash:
        raise S3Error("InvalidRequest", "The x-amz-content-sha256 header is missing.")
    caller, secret = await _secret(credentials, credential.access_key_id)
    key = sigv4.signing_key(secret, credential.day, credential.region, credential.service)
    signed = fields["SignedHeaders"].split(";")
    query = sigv4.canonical_query(request.query)
    signature = fields["Signature"]
    _check_v4(request, key, amz_date, credential.scope, signed, query, payload_hash, signature)
    signer = sigv4.ChunkSigner(key, amz_date, credential.scope, signature)
    return caller, _payload_check(payload_hash, signer)


async def _query_v4(
    request: S3Request, credentials: Credentials, now: datetime
) -> tuple[Caller, PayloadCheck]:
    params = request.params
    credential = sigv4.parse_credential(params.get("X-Amz-Credential", ""))
    amz_date = params.get("X-Amz-Date", "")
    signed_at = sigv4.parse_amz_date(amz_date)
    try:
        expires_s = int(params.get("X-Amz-Expires", ""))
    except ValueError:
        expires_s = None
    if (
        credential is None
        or signed_at is None
        or expires_s is None
        or "X-Amz-Signature" not in params
    ):
        raise S3Error("AuthorizationQueryParametersError")
    if expires_s > MAX_PRESIGN_EXPIRY_S:
        raise S3Error(
            "AuthorizationQueryParametersError",
            "X-Amz-Expires must be less than a week (604800 seconds).",
            fix="presign with ExpiresIn <= 604800",
        )
    if expires_s <= 0 or now > signed_at + timedelta(seconds=expires_s):
        raise S3Error("AccessDenied", "Request has expired.", fix="presign a new URL")
    if signed_at - now > MAX_CLOCK_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet.")
    caller, secret = await _secret(credentials, credential.access_key_id)
    key = sigv4.signing_key(secret, credential.day, credential.region, credential.service)
    signed = params.get("X-Amz-SignedHeaders", "host").split(";")
    query = sigv4.canonical_query(request.query, skip="X-Amz-Signature")
    payload_hash = params.get("X-Amz-Content-Sha256", sigv4.UNSIGNED_PAYLOAD)
    signature = params["X-Amz-Signature"]
    _check_v4(request, key, amz_date, credential.scope, signed, query, payload_hash, signature)
    return caller, _payload_check(payload_hash, None)


def _check_v4(
    request: S3Request,
    key: bytes,
    amz_date: str,
    scope: str,
    signed: list[str],
    query: str,
    payload_hash: str,
    signature: str,
) -> None:
    if "host" not in signed:
        raise S3Error("AccessDenied", "The signature must cover the Host header.")
    # Clients percent-encode paths canonically; a few send other encodings, signed as sent.
    for uri in dict.fromkeys((sigv4.canonical_uri(request.path), request.raw_path)):
        canonical = sigv4.canonical_request(
            request.method, uri, query, request.headers, signed, payload_hash
        )
        expected = sigv4.sign(key, sigv4.string_to_sign(amz_date, scope, canonical))
        if sigv4.same_signature(signature, expected):
            return
    raise S3Error(
        "SignatureDoesNotMatch",
        fix="check the secret access key and that no proxy rewrites the request",
    )


def _payload_check(payload_hash: str, signer: sigv4.ChunkSigner | None) -> PayloadCheck:
    if payload_hash == sigv4.UNSIGNED_PAYLOAD:
        return PayloadCheck()
    if payload_hash in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER):
        if signer is None:
            raise S3Error("InvalidRequest", "Presigned requests cannot stream signed chunks.")
        return PayloadCheck(chunked=True, signer=signer)
    if payload_hash == sigv4.STREAMING_UNSIGNED_TRAILER:
        return PayloadCheck(chunked=True)
    if _HEX_SHA256.fullmatch(payload_hash):
        return PayloadCheck(sha256=payload_hash)
    raise S3Error("InvalidArgument", f"x-amz-content-sha256 {payload_hash[:80]!r} is not valid.")


async def _query_v2(
    request: S3Request, credentials: Credentials, now: datetime
) -> tuple[Caller, PayloadCheck]:
    params = request.params
    try:
        expires = int(params["Expires"])
    except (KeyError, ValueError):
        raise S3Error("AuthorizationQueryParametersError", "Expires is missing.") from None
    if now.timestamp() > expires:
        raise S3Error("AccessDenied", "Request has expired.", fix="presign a new URL")
    caller, secret = await _secret(credentials, params["AWSAccessKeyId"])
    prefix = f"/{request.bucket}" if request.virtual_host else ""
    for path in dict.fromkeys((request.raw_path, sigv4.canonical_uri(request.path))):
        resource = sigv2.canonical_resource(prefix + path, request.query)
        text = sigv2.string_to_sign(request.method, request.headers, str(expires), resource)
        if sigv4.same_signature(params["Signature"], sigv2.signature(secret, text)):
            return caller, PayloadCheck()
    raise S3Error("SignatureDoesNotMatch", fix="check the secret access key")


def _amz_date_of_http_date(value: str) -> str:
    if not value:
        return ""
    try:
        return parsedate_to_datetime(value).astimezone(UTC).strftime(sigv4.AMZ_DATE_FORMAT)
    except (TypeError, ValueError):
        return ""
