r"""Decoding of ``Content-Encoding: aws-chunked`` request bodies, incrementally.

The body is a series of chunks, then optional trailing headers::

    <hex size>[;chunk-signature=<sig>]\r\n <size bytes> \r\n      (repeated)
    0[;chunk-signature=<sig>]\r\n
    x-amz-checksum-crc32:<base64>\r\n                       (trailer, optional)
    x-amz-trailer-signature:<sig>\r\n                       (signed trailer only)
    \r\n

boto3 sends it over HTTPS unsigned with a CRC trailer; the Java and Go SDKs
and Hadoop S3A sign every chunk. The decoder runs in the upload thread and
hands out the payload as views of the raw buffers, without copying.
"""

from __future__ import annotations

import hashlib

from aifactory.objects.errors import S3Error
from aifactory.objects.s3.sigv4 import EMPTY_SHA256, ChunkSigner

_MAX_LINE_BYTES = 4096
_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)
_TRAILER_SIGNATURE = "x-amz-trailer-signature"


class AwsChunkedDecoder:
    """Feeds raw body bytes in, gives payload pieces out, keeps the trailers.

    Args:
        signer: Checks each chunk's signature (signed variants), or None.
    """

    def __init__(self, signer: ChunkSigner | None) -> None:
        self._signer = signer
        self._state = _HEADER
        self._line = bytearray()
        self._remaining = 0
        self._chunk_sha256 = hashlib.sha256()
        self._chunk_signature = ""
        self._trailer_lines: list[str] = []
        self.trailers: dict[str, str] = {}

    def feed(self, data: bytes) -> list[memoryview]:
        """Decode the next raw bytes; returns the payload they contained."""
        view = memoryview(data)
        pieces = []
        position, end = 0, len(data)
        while position < end:
            if self._state == _DATA:
                take = min(self._remaining, end - position)
                piece = view[position : position + take]
                pieces.append(piece)
                if self._signer is not None:
                    self._chunk_sha256.update(piece)
                self._remaining -= take
                position += take
                if self._remaining == 0:
                    self._state = _DATA_END
            elif self._state == _DONE:
                if data[position:].strip():
                    raise _malformed("bytes after the final chunk")
                break
            else:
                newline = data.find(b"\n", position)
                stop = end if newline < 0 else newline + 1
                self._line += view[position:stop]
                position = stop
                if len(self._line) > _MAX_LINE_BYTES:
                    raise _malformed("a chunk header or trailer line is too long")
                if newline >= 0:
                    line = bytes(self._line).rstrip(b"\r\n").decode("latin-1")
                    self._line.clear()
                    self._on_line(line)
        return pieces

    def finish(self) -> dict[str, str]:
        """Check the body ended after its last chunk; returns the trailing headers."""
        if self._state != _DONE:
            raise S3Error("IncompleteBody", "The aws-chunked body ended before its final chunk.")
        return self.trailers

    def _on_line(self, line: str) -> None:
        if self._state == _DATA_END:
            if line:
                raise _malformed("a chunk is longer than its declared size")
            self._check_chunk(self._chunk_sha256.hexdigest())
            self._state = _HEADER
        elif self._state == _HEADER:
            self._start_chunk(line)
        else:
            self._on_trailer(line)

    def _start_chunk(self, line: str) -> None:
        size_text, _, extension = line.partition(";")
        try:
            size = int(size_text.strip(), 16)
        except ValueError:
            raise _malformed(f"bad chunk size {size_text[:20]!r}") from None
        name, _, signature = extension.partition("=")
        self._chunk_signature = signature.strip() if name.strip() == "chunk-signature" else ""
        if self._signer is not None and not self._chunk_signature:
            raise S3Error("SignatureDoesNotMatch", "A chunk of a signed stream has no signature.")
        if size == 0:
            self._check_chunk(EMPTY_SHA256)
            self._state = _TRAILER
        else:
            self._remaining = size
            self._chunk_sha256 = hashlib.sha256()
            self._state = _DATA

    def _check_chunk(self, payload_sha256: str) -> None:
        if self._signer is None:
            return
        expected = self._signer.chunk_signature(payload_sha256)
        if not self._signer.accept(self._chunk_signature, expected):
            raise S3Error("SignatureDoesNotMatch", "A chunk signature does not match.")

    def _on_trailer(self, line: str) -> None:
        if not line:
            if self._signer is not None and self._trailer_lines:
                raise S3Error("SignatureDoesNotMatch", "The trailer has no signature.")
            self._state = _DONE
            return
        name, sep, value = line.partition(":")
        if not sep:
            raise _malformed("a trailer line has no ':'")
        name, value = name.strip().lower(), value.strip()
        if name == _TRAILER_SIGNATURE and self._signer is not None:
            digest = hashlib.sha256("".join(self._trailer_lines).encode()).hexdigest()
            if not self._signer.accept(value, self._signer.trailer_signature(digest)):
                raise S3Error("SignatureDoesNotMatch", "The trailer signature does not match.")
            self._trailer_lines.clear()
            return
        self._trailer_lines.append(f"{name}:{value}\n")
        self.trailers[name] = value


def _malformed(detail: str) -> S3Error:
    return S3Error(
        "InvalidArgument",
        f"The aws-chunked body is malformed: {detail}.",
        fix="send Content-Encoding: aws-chunked only with a body in that encoding",
    )
