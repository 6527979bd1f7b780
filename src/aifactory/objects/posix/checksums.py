"""Request checksums: CRC32, CRC32C, SHA-1, SHA-256 (``x-amz-checksum-*``) and Content-MD5.

Values travel base64-encoded, CRCs as 4 big-endian bytes. A multipart
object's checksum is *composite*: the checksum of the parts' checksums,
suffixed ``-N``, which clients recognise and do not check against the body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from typing import Protocol

import crc32c

from aifactory.objects.errors import S3Error

ALGORITHMS = ("crc32", "crc32c", "sha1", "sha256")
_HEADER_PREFIX = "x-amz-checksum-"


class Hasher(Protocol):
    """The part of ``hashlib``'s interface the upload path uses."""

    def update(self, data: bytes | memoryview, /) -> None:
        """Feed more bytes."""

    def digest(self) -> bytes:
        """The digest of everything fed so far."""


class _Crc32:
    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | memoryview, /) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


class _Crc32c:
    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | memoryview, /) -> None:
        self._value = crc32c.crc32c(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


def new_hasher(algorithm: str) -> Hasher:
    """A fresh incremental hasher for one of ``ALGORITHMS``."""
    if algorithm == "crc32":
        return _Crc32()
    if algorithm == "crc32c":
        return _Crc32c()
    return hashlib.new(algorithm)


def header_name(algorithm: str) -> str:
    """``x-amz-checksum-ALGORITHM``."""
    return _HEADER_PREFIX + algorithm


def algorithm_of_header(name: str) -> str | None:
    """The algorithm of an ``x-amz-checksum-*`` header name, else None.

    Raises:
        S3Error: InvalidRequest for a checksum algorithm this server cannot verify.
    """
    if not name.startswith(_HEADER_PREFIX):
        return None
    algorithm = name[len(_HEADER_PREFIX) :]
    if algorithm in ("algorithm", "mode", "type"):
        return None
    if algorithm not in ALGORITHMS:
        raise S3Error(
            "InvalidRequest",
            f"The checksum algorithm {algorithm!r} is not supported.",
            fix="use CRC32, CRC32C, SHA1 or SHA256 (boto3: request_checksum_calculation)",
        )
    return algorithm


def encode(digest: bytes) -> str:
    """Base64 text of a digest, as S3 headers carry it."""
    return base64.b64encode(digest).decode()


def decode(value: str, expected_bytes: int, header: str) -> bytes:
    """The digest in a base64 header value; InvalidDigest when it is not one."""
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise S3Error("InvalidDigest", f"{header} is not valid base64.") from exc
    if len(digest) != expected_bytes:
        raise S3Error("InvalidDigest", f"{header} has the wrong length for its algorithm.")
    return digest


def digest_size(algorithm: str) -> int:
    """How many bytes a digest of ``algorithm`` has."""
    return {"crc32": 4, "crc32c": 4, "sha1": 20, "sha256": 32, "md5": 16}[algorithm]


def composite(algorithm: str, part_checksums: list[str]) -> str:
    """The composite checksum of a multipart object: checksum of part checksums, ``-N``."""
    hasher = new_hasher(algorithm)
    for value in part_checksums:
        hasher.update(base64.b64decode(value))
    return f"{encode(hasher.digest())}-{len(part_checksums)}"
