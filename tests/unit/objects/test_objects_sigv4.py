"""SigV4 against the worked examples in the AWS S3 documentation (sigv4-*-examples)."""

import hashlib
from datetime import UTC, datetime

import pytest

from aifactory.objects import S3Error
from aifactory.objects.s3 import sigv4
from aifactory.objects.s3.chunked import AwsChunkedDecoder

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DAY, AMZ_DATE = "20130524", "20130524T000000Z"
SCOPE = f"{DAY}/us-east-1/s3/aws4_request"


def _key() -> bytes:
    return sigv4.signing_key(SECRET, DAY, "us-east-1", "s3")


def test_get_object_example() -> None:
    headers = {
        "host": ["examplebucket.s3.amazonaws.com"],
        "range": ["bytes=0-9"],
        "x-amz-content-sha256": [sigv4.EMPTY_SHA256],
        "x-amz-date": [AMZ_DATE],
    }
    signed = ["host", "range", "x-amz-content-sha256", "x-amz-date"]
    request = sigv4.canonical_request(
        "GET", sigv4.canonical_uri("/test.txt"), "", headers, signed, sigv4.EMPTY_SHA256
    )
    signature = sigv4.sign(_key(), sigv4.string_to_sign(AMZ_DATE, SCOPE, request))
    assert signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


def test_presigned_get_example() -> None:
    query = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", f"AKIAIOSFODNN7EXAMPLE/{SCOPE}"),
        ("X-Amz-Date", AMZ_DATE),
        ("X-Amz-Expires", "86400"),
        ("X-Amz-SignedHeaders", "host"),
        ("X-Amz-Signature", "ignored"),
    ]
    request = sigv4.canonical_request(
        "GET",
        "/test.txt",
        sigv4.canonical_query(query, skip="X-Amz-Signature"),
        {"host": ["examplebucket.s3.amazonaws.com"]},
        ["host"],
        sigv4.UNSIGNED_PAYLOAD,
    )
    signature = sigv4.sign(_key(), sigv4.string_to_sign(AMZ_DATE, SCOPE, request))
    assert signature == "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"


def _streaming_seed() -> str:
    headers = {
        "content-encoding": ["aws-chunked"],
        "content-length": ["66824"],
        "host": ["s3.amazonaws.com"],
        "x-amz-content-sha256": [sigv4.STREAMING_SIGNED],
        "x-amz-date": [AMZ_DATE],
        "x-amz-decoded-content-length": ["66560"],
        "x-amz-storage-class": ["REDUCED_REDUNDANCY"],
    }
    request = sigv4.canonical_request(
        "PUT",
        "/examplebucket/chunkObject.txt",
        "",
        headers,
        sorted(headers),
        sigv4.STREAMING_SIGNED,
    )
    return sigv4.sign(_key(), sigv4.string_to_sign(AMZ_DATE, SCOPE, request))


def test_streaming_put_example_seed_and_chunks() -> None:
    seed = _streaming_seed()
    assert seed == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    signer = sigv4.ChunkSigner(_key(), AMZ_DATE, SCOPE, seed)
    first = signer.chunk_signature(hashlib.sha256(b"a" * 65536).hexdigest())
    assert first == "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"


def test_signed_chunked_body_decodes_and_a_tampered_chunk_fails() -> None:
    seed = _streaming_seed()
    signatures = [
        b"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        b"0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        b"b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ]
    body = (
        b"10000;chunk-signature=" + signatures[0] + b"\r\n" + b"a" * 65536 + b"\r\n"
        b"400;chunk-signature=" + signatures[1] + b"\r\n" + b"a" * 1024 + b"\r\n"
        b"0;chunk-signature=" + signatures[2] + b"\r\n\r\n"
    )
    decoder = AwsChunkedDecoder(sigv4.ChunkSigner(_key(), AMZ_DATE, SCOPE, seed))
    pieces = [decoder.feed(body[i : i + 777]) for i in range(0, len(body), 777)]
    payload = b"".join(bytes(p) for step in pieces for p in step)
    decoder.finish()
    assert payload == b"a" * 66560

    tampered = body.replace(b"a" * 1024, b"b" + b"a" * 1023)
    decoder = AwsChunkedDecoder(sigv4.ChunkSigner(_key(), AMZ_DATE, SCOPE, seed))
    with pytest.raises(S3Error) as caught:
        decoder.feed(tampered)
    assert caught.value.code == "SignatureDoesNotMatch"


def test_a_chunk_signature_with_non_ascii_bytes_does_not_match() -> None:
    decoder = AwsChunkedDecoder(sigv4.ChunkSigner(_key(), AMZ_DATE, SCOPE, _streaming_seed()))
    with pytest.raises(S3Error) as caught:
        decoder.feed(b"1;chunk-signature=\xe9\r\na\r\n")
    assert caught.value.code == "SignatureDoesNotMatch"


def test_amz_date_parses_only_the_exact_form() -> None:
    assert sigv4.parse_amz_date("20130524T010203Z") == datetime(2013, 5, 24, 1, 2, 3, tzinfo=UTC)
    for malformed in (
        "", "20130524", "20130524T010203", "20130524 010203Z", "2013-5-24T010203Z",
        "20131324T010203Z", "20130524T250203Z", "2013052٤T010203Z", "20130524T010203Z ",
    ):  # fmt: skip
        assert sigv4.parse_amz_date(malformed) is None, malformed
