import zlib

import pytest

from aifactory.objects import S3Error
from aifactory.objects.posix.checksums import encode
from aifactory.objects.s3.chunked import AwsChunkedDecoder


def _unsigned_body(payload: bytes, chunk: int) -> bytes:
    """What botocore sends over HTTPS: hex-size chunks, then a CRC32 trailer."""
    parts = [
        b"%x\r\n%s\r\n" % (len(payload[i : i + chunk]), payload[i : i + chunk])
        for i in range(0, len(payload), chunk)
    ]
    crc = encode(zlib.crc32(payload).to_bytes(4, "big")).encode()
    return b"".join(parts) + b"0\r\nx-amz-checksum-crc32:" + crc + b"\r\n\r\n"


@pytest.mark.parametrize("feed_size", [1, 7, 1000, 1 << 20])
def test_unsigned_trailer_body_in_any_split(feed_size: int) -> None:
    payload = bytes(range(256)) * 300
    body = _unsigned_body(payload, 8192)
    decoder = AwsChunkedDecoder(None)
    out = b"".join(
        bytes(p)
        for i in range(0, len(body), feed_size)
        for p in decoder.feed(body[i : i + feed_size])
    )
    trailers = decoder.finish()
    assert out == payload
    assert trailers["x-amz-checksum-crc32"] == encode(zlib.crc32(payload).to_bytes(4, "big"))


def test_truncated_body_is_incomplete() -> None:
    body = _unsigned_body(b"x" * 100, 64)
    decoder = AwsChunkedDecoder(None)
    decoder.feed(body[:-10])
    with pytest.raises(S3Error) as caught:
        decoder.finish()
    assert caught.value.code == "IncompleteBody"


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n", b"1" * 5000],
    ids=["bad-size", "chunk-longer-than-declared", "endless-header"],
)
def test_malformed_bodies_are_rejected(body: bytes) -> None:
    with pytest.raises(S3Error) as caught:
        AwsChunkedDecoder(None).feed(body)
    assert caught.value.code == "InvalidArgument"


def test_signed_stream_without_chunk_signature_is_rejected() -> None:
    from aifactory.objects.s3.sigv4 import ChunkSigner

    decoder = AwsChunkedDecoder(ChunkSigner(b"k" * 32, "20240101T000000Z", "s", "seed"))
    with pytest.raises(S3Error) as caught:
        decoder.feed(b"3\r\nabc\r\n")
    assert caught.value.code == "SignatureDoesNotMatch"
