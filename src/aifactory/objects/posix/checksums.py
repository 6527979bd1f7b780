"""Request checksums: CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256 (``x-amz-checksum-*``), Content-MD5.

Values travel base64-encoded, CRCs as big-endian bytes. A multipart object's
checksum is either *composite*, the checksum of the parts' checksums suffixed
``-N`` (clients do not check it against the body), or, for the CRCs, of the
*full object*: the parts' CRCs combined with their lengths, no byte re-read.
CRC64NVME is full-object only, SHA-1 and SHA-256 composite only. The CRCs
beyond zlib's come from ``awscrt``, the AWS SDKs' own runtime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable
from typing import Protocol

from awscrt import checksums as crt

from aifactory.objects.errors import S3Error

ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
COMPOSITE, FULL_OBJECT = "COMPOSITE", "FULL_OBJECT"
_HEADER_PREFIX = "x-amz-checksum-"
_SIZES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32, "md5": 16}
_COMBINE = {
    "crc32": crt.combine_crc32,
    "crc32c": crt.combine_crc32c,
    "crc64nvme": crt.combine_crc64nvme,
}


class Hasher(Protocol):
    """The part of ``hashlib``'s interface the upload path uses."""

    def update(self, data: bytes | memoryview, /) -> None:
        """Feed more bytes."""

    def digest(self) -> bytes:
        """The digest of everything fed so far."""


class _Crc:
    def __init__(self, update: Callable[[bytes | memoryview, int], int], size: int) -> None:
        self._update = update
        self._size = size
        self._value = 0

    def update(self, data: bytes | memoryview, /) -> None:
        self._value = self._update(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._size, "big")


def new_hasher(algorithm: str) -> Hasher:
    """A fresh incremental hasher for one of ``ALGORITHMS``."""
    if algorithm == "crc32":
        return _Crc(zlib.crc32, 4)
    if algorithm == "crc32c":
        return _Crc(crt.crc32c, 4)
    if algorithm == "crc64nvme":
        return _Crc(crt.crc64nvme, 8)
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
            fix="use CRC32, CRC32C, CRC64NVME, SHA1 or SHA256",
        )
    return algorithm


def encode(digest: bytes) -> str:
    """Base64 text of a digest, as S3 headers carry it."""
    return base64.b64encode(digest).decode()


def decode(value: str, expected_bytes: int, header: str, code: str = "InvalidDigest") -> bytes:
    """The digest in a base64 header value; S3Error ``code`` when it is not one."""
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise S3Error(code, f"{header} is not valid base64.") from exc
    if len(digest) != expected_bytes:
        raise S3Error(code, f"{header} has the wrong length for its algorithm.")
    return digest


def digest_size(algorithm: str) -> int:
    """How many bytes a digest of ``algorithm`` has."""
    return _SIZES[algorithm]


def multipart_type(algorithm: str, asked: str) -> str:
    """The checksum type of a multipart upload: ``asked``, or the algorithm's default.

    Raises:
        S3Error: InvalidRequest for a type the algorithm cannot have.
    """
    asked = asked.upper()
    if asked not in ("", COMPOSITE, FULL_OBJECT):
        raise S3Error("InvalidRequest", f"Unknown checksum type {asked[:20]!r}.")
    if asked and not algorithm:
        raise S3Error("InvalidRequest", "A checksum type needs a checksum algorithm.")
    if not algorithm:
        return ""
    allowed: tuple[str, ...] = (FULL_OBJECT,) if algorithm == "crc64nvme" else (COMPOSITE,)
    if algorithm in ("crc32", "crc32c"):
        allowed = (COMPOSITE, FULL_OBJECT)
    if asked and asked not in allowed:
        raise S3Error(
            "InvalidRequest",
            f"The {algorithm.upper()} checksum cannot be of type {asked}.",
            fix=f"ask for {' or '.join(allowed)}",
        )
    return asked or allowed[0]


def type_of(checksum: str) -> str:
    """COMPOSITE for a composite value (it ends in ``-N``), FULL_OBJECT otherwise."""
    return COMPOSITE if "-" in checksum else FULL_OBJECT


def composite(algorithm: str, part_checksums: list[str]) -> str:
    """The composite checksum of a multipart object: checksum of part checksums, ``-N``."""
    hasher = new_hasher(algorithm)
    for value in part_checksums:
        hasher.update(base64.b64decode(value))
    return f"{encode(hasher.digest())}-{len(part_checksums)}"


def full_object(algorithm: str, parts: list[tuple[str, int]]) -> str:
    """The CRC of the whole object from its parts' (checksum, length), in order."""
    combine, size = _COMBINE[algorithm], _SIZES[algorithm]
    value = 0
    for index, (checksum, length) in enumerate(parts):
        crc = int.from_bytes(base64.b64decode(checksum), "big")
        value = crc if index == 0 else combine(value, crc, length)
    return encode(value.to_bytes(size, "big"))
