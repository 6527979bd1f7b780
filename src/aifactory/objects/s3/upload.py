"""One request body on its way to disk: decoded, hashed, verified, written.

The app's event loop gathers the body into batches of about a megabyte and
hands each to ``UploadBody.feed`` in a worker thread, keeping one batch in
flight while the next arrives; memory per upload stays near two batches. An
upload that fails any check is dropped before it is renamed into place.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Protocol

from aifactory.objects.errors import S3Error
from aifactory.objects.posix import checksums
from aifactory.objects.s3.auth import PayloadCheck
from aifactory.objects.s3.chunked import AwsChunkedDecoder
from aifactory.objects.s3.request import S3Request

MAX_SINGLE_UPLOAD_BYTES = 5 * 1024**3


class Sink(Protocol):
    """Where decoded bytes go (an object's or a part's temporary file)."""

    def write(self, data: bytes | memoryview) -> None:
        """Append bytes."""

    def abort(self) -> None:
        """Drop what was written."""


@dataclass
class Digests:
    """What the body turned out to be."""

    size: int
    md5: bytes
    checksum_algorithm: str
    checksum: str

    @property
    def etag(self) -> str:
        """The quoted hex MD5, S3's ETag of a single upload."""
        return f'"{self.md5.hex()}"'


class UploadBody:
    """Decodes, hashes and writes one request body, then verifies every promise made.

    Args:
        sink: Where the bytes go.
        check: How the signature covers the payload.
        request: The request (for Content-MD5, checksum and length headers).
        default_algorithm: Checksum to compute when the client names none
            (a multipart upload's algorithm), or ``""``.
    """

    def __init__(
        self, sink: Sink, check: PayloadCheck, request: S3Request, default_algorithm: str = ""
    ) -> None:
        self._sink = sink
        self._check = check
        self._decoder = AwsChunkedDecoder(check.signer) if check.chunked else None
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256() if check.sha256 else None
        self._content_md5 = request.header("content-md5")
        if "content-md5" in request.headers and not self._content_md5.strip():
            raise S3Error("InvalidDigest", "The Content-MD5 header is empty.")
        self._expected_checksum = ""
        self._algorithm = default_algorithm
        for name, values in request.headers.items():
            algorithm = checksums.algorithm_of_header(name)
            if algorithm is not None:
                self._algorithm, self._expected_checksum = algorithm, values[0]
        trailer = request.header("x-amz-trailer").strip().lower()
        if trailer:
            self._algorithm = checksums.algorithm_of_header(trailer) or self._algorithm
        sdk_algorithm = request.header("x-amz-sdk-checksum-algorithm").lower()
        if not self._algorithm and sdk_algorithm in checksums.ALGORITHMS:
            self._algorithm = sdk_algorithm
        self._checksum = checksums.new_hasher(self._algorithm) if self._algorithm else None
        self._expected_size = announced_size(request, check.chunked)
        self.size = 0

    @property
    def algorithm(self) -> str:
        """The checksum algorithm the body is hashed with ("": none)."""
        return self._algorithm

    def feed(self, raw: bytes) -> None:
        """Take the next raw bytes of the body."""
        pieces = self._decoder.feed(raw) if self._decoder is not None else [raw]
        for piece in pieces:
            self._md5.update(piece)
            if self._sha256 is not None:
                self._sha256.update(piece)
            if self._checksum is not None:
                self._checksum.update(piece)
            self._sink.write(piece)
            self.size += len(piece)
        if self.size > MAX_SINGLE_UPLOAD_BYTES:
            raise S3Error("EntityTooLarge", fix="use a multipart upload above 5 GiB")

    def finish(self, raw: bytes) -> Digests:
        """Take the last bytes, check lengths, hashes and checksums; returns the digests."""
        self.feed(raw)
        trailers = self._decoder.finish() if self._decoder is not None else {}
        if self._expected_size is not None and self.size != self._expected_size:
            raise S3Error(
                "IncompleteBody",
                f"Received {self.size} bytes of {self._expected_size} announced.",
            )
        md5 = self._md5.digest()
        if self._sha256 is not None and self._sha256.hexdigest() != self._check.sha256:
            raise S3Error("XAmzContentSHA256Mismatch")
        if self._content_md5 and not hmac.compare_digest(
            checksums.decode(self._content_md5, 16, "Content-MD5"), md5
        ):
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match.")
        checksum = ""
        if self._checksum is not None:
            digest = self._checksum.digest()
            checksum = checksums.encode(digest)
            header = checksums.header_name(self._algorithm)
            expected = trailers.get(header, self._expected_checksum)
            size = checksums.digest_size(self._algorithm)
            if expected and checksums.decode(expected, size, header, "BadDigest") != digest:
                raise S3Error("BadDigest", f"The {header} you specified did not match.")
        return Digests(self.size, md5, self._algorithm, checksum)


def announced_size(request: S3Request, chunked: bool) -> int | None:
    """The body length the request announces (decoded, for aws-chunked); None: unknown."""
    header = "x-amz-decoded-content-length" if chunked else "content-length"
    value = request.header(header)
    if not value:
        return None
    try:
        size = int(value)
    except ValueError:
        raise S3Error("InvalidArgument", f"{header} {value[:40]!r} is not a number.") from None
    if size > MAX_SINGLE_UPLOAD_BYTES:
        raise S3Error("EntityTooLarge", fix="use a multipart upload above 5 GiB")
    return size
