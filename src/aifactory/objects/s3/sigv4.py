r"""AWS Signature Version 4 as S3 uses it: the pure parts, no I/O.

One signed request::

    canonical request = METHOD \n URI \n QUERY \n HEADERS \n SIGNED-HEADERS \n PAYLOAD-HASH
    string to sign    = AWS4-HMAC-SHA256 \n DATE \n SCOPE \n sha256(canonical request)
    signature         = hex HMAC(signing key(secret, day, region, service), string to sign)

Streaming uploads (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``) then sign every
chunk, chaining each signature to the previous one, starting from the
request's own ("seed") signature; see ``ChunkSigner``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Credential:
    """The ``Credential=`` value: access key id and scope (day/region/service/aws4_request)."""

    access_key_id: str
    day: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        """``day/region/service/aws4_request``."""
        return f"{self.day}/{self.region}/{self.service}/aws4_request"


def parse_credential(value: str) -> Credential | None:
    """Split ``AKID/20130524/us-east-1/s3/aws4_request``; None when malformed."""
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts[:4]):
        return None
    return Credential(parts[0], parts[1], parts[2], parts[3])


def parse_authorization(value: str) -> dict[str, str] | None:
    """The fields of an ``AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`` header."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields = {}
    for item in rest.split(","):
        name, _, field = item.strip().partition("=")
        fields[name] = field
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        return None
    return fields


def parse_amz_date(value: str) -> datetime | None:
    """``20130524T000000Z`` as an aware datetime; None when malformed.

    Sliced by hand: ``strptime`` consults the locale on every call, and showed
    up in the profile of every small request.
    """
    if len(value) != 16 or value[8] != "T" or value[15] != "Z":
        return None
    digits = value[:8] + value[9:15]
    if not (digits.isascii() and digits.isdigit()):
        return None
    try:
        return datetime(
            int(digits[:4]), int(digits[4:6]), int(digits[6:8]),
            int(digits[8:10]), int(digits[10:12]), int(digits[12:14]), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return None


@lru_cache(maxsize=1024)
def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    """The day's derived signing key (cached: it changes once a day per key)."""
    key = _hmac(("AWS4" + secret).encode(), day)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.digest(key, message.encode(), "sha256")


def sign(key: bytes, string_to_sign: str) -> str:
    """Hex HMAC-SHA256 of ``string_to_sign`` (one-shot: OpenSSL's, without the HMAC object)."""
    return hmac.digest(key, string_to_sign.encode(), "sha256").hex()


def same_signature(presented: str, expected: str) -> bool:
    """Compare a client's signature to ours in constant time.

    As bytes: ``hmac.compare_digest`` raises on ``str`` with non-ASCII
    characters, which a hostile client may send.
    """
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode())


def canonical_uri(path: str) -> str:
    """The decoded path, each byte outside ``A-Za-z0-9-._~/`` percent-encoded."""
    return quote(path, safe="/~")


def canonical_query(pairs: list[tuple[str, str]], skip: str = "") -> str:
    """Decoded query pairs, encoded and sorted the way SigV4 wants."""
    encoded = sorted(
        (quote(name, safe="-_.~"), quote(value, safe="-_.~"))
        for name, value in pairs
        if name != skip
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(headers: dict[str, list[str]], signed: list[str]) -> str:
    r"""``name:value\n`` for each signed header, values trimmed and joined with ','."""
    lines = []
    for name in signed:
        values = headers.get(name, [])
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    uri: str,
    query: str,
    headers: dict[str, list[str]],
    signed: list[str],
    payload_hash: str,
) -> str:
    """The canonical request text."""
    return "\n".join(
        [method, uri, query, canonical_headers(headers, signed), ";".join(signed), payload_hash]
    )


def string_to_sign(amz_date: str, scope: str, request: str) -> str:
    """The string to sign of a canonical request.

    Its URI and query are percent-encoded ASCII, and header values were
    decoded one byte per character (Latin-1): encoding it back the same way
    hashes the very bytes the client sent and signed, UTF-8 metadata included.
    """
    digest = hashlib.sha256(request.encode("latin-1")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


@dataclass
class ChunkSigner:
    """Checks the chained signatures of a signed ``aws-chunked`` body.

    Args:
        key: The request's signing key.
        amz_date: The request's ``x-amz-date``.
        scope: The request's credential scope.
        previous: The signature the next chunk chains to (first: the seed).
    """

    key: bytes
    amz_date: str
    scope: str
    previous: str

    def chunk_signature(self, chunk_sha256: str) -> str:
        """The expected signature of the next chunk, given its payload's SHA-256."""
        text = (
            f"{ALGORITHM}-PAYLOAD\n{self.amz_date}\n{self.scope}\n"
            f"{self.previous}\n{EMPTY_SHA256}\n{chunk_sha256}"
        )
        return sign(self.key, text)

    def trailer_signature(self, trailer_sha256: str) -> str:
        """The expected signature of the trailing headers."""
        text = (
            f"{ALGORITHM}-TRAILER\n{self.amz_date}\n{self.scope}\n{self.previous}\n{trailer_sha256}"
        )
        return sign(self.key, text)

    def accept(self, presented: str, expected: str) -> bool:
        """Compare in constant time and, on a match, chain the next signature to it."""
        if not same_signature(presented, expected):
            return False
        self.previous = presented
        return True
