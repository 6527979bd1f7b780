"""Fuzz the S3 API: hostile bucket and key names, headers, ranges, query strings and XML bodies.

Requests are signed by botocore (SigV4 in the header, presigned, or
unsigned-payload with a trailer for aws-chunked bodies), so they pass
authentication and reach the handlers; some are tampered with after signing
to fuzz the signature parsers themselves.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

import boto3
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import example, given
from hypothesis import strategies as st

from .conftest import BUCKET, SEED_KEY, Target, fuzz_settings
from .strategies import (
    Strategy,
    hostile_text,
    latin1,
    percent_encoded,
    weighted,
)
from .wire import Outcome, Request, backpressure

_UNSIGNED = Config(s3={"payload_signing_enabled": False})
_TRAILER = {"request_algorithm": {"in": "trailer", "name": "x-amz-checksum-crc32"}}


@dataclass(frozen=True)
class Call:
    """An S3 call before signing. ``tamper`` replaces headers or query values once signed."""

    label: str
    method: str
    bucket: str
    key: str = ""
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    signing: str = "header"  # header (unsigned payload) | sha256 | trailer | presigned | none
    tamper: tuple[tuple[str, str], ...] = ()


def _sign(call: Call, port: int, credentials: Credentials) -> Request:
    path = "/" + percent_encoded(call.bucket) if call.bucket else "/"
    if call.key:
        path += "/" + quote(call.key.encode("utf-8", "surrogatepass"), safe="/")
    pairs = "&".join(f"{percent_encoded(k)}={percent_encoded(v)}" for k, v in call.query)
    url = f"http://127.0.0.1:{port}{path}" + (f"?{pairs}" if pairs else "")
    signed = AWSRequest(call.method, url, data=call.body, headers=dict(call.headers))
    if call.signing == "presigned":
        S3SigV4QueryAuth(credentials, "s3", "us-east-1", expires=600).add_auth(signed)
    elif call.signing != "none":
        if call.signing != "sha256":
            signed.context = {"client_config": _UNSIGNED}
        if call.signing == "trailer":
            signed.context["checksum"] = _TRAILER
        S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(signed)
    headers = {name.lower(): str(value) for name, value in signed.headers.items()}
    parts = urlsplit(signed.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    for name, value in call.tamper:
        if call.signing == "presigned":
            target = _replace_param(target, name, value)
        else:
            headers[name] = value
    return Request(call.label, call.method, target, tuple(headers.items()), call.body)


def _replace_param(target: str, name: str, value: str) -> str:
    path, _, query = target.partition("?")
    kept = [p for p in query.split("&") if p.partition("=")[0] != name]
    return path + "?" + "&".join([*kept, f"{name}={percent_encoded(value)}"])


# --- names, headers and bodies ------------------------------------------------------------

HOSTILE_KEYS = (
    "..",
    "../x",
    "a/../../x",
    "./x",
    "a//b",
    "/x",
    "x/",
    "a/./b",
    "%2e%2e/x",
    "\x00x",
    "k" * 1025,
    "s/" * 200,
    "x" * 256,
    ".aifactory",
    "a\\..\\b",
    "\u202e.txt",
    " ",
)
HOSTILE_BUCKETS = ("a", "A-B", "fz..b", "-fz", "fz-", "127.0.0.1", "x" * 64, "..", "fz_b", "xn--fz")
RANGES = (
    "bytes=0-0",
    "bytes=0-",
    "bytes=-1",
    "bytes=-0",
    "bytes=5-2",
    "bytes=999-",
    "bytes=0-99999999999999999999999",
    "bytes=99999999999999999999999-",
    "bytes=-99999999999999999999999",
    "bytes=a-b",
    "bytes=--1",
    "bytes=0-1,3-4",
    "items=0-1",
    "bytes=",
    "bytes= 0 - 1 ",
)


def _keys(avoid_seed: bool = False) -> Strategy[str]:
    usual = st.sampled_from(["a.txt", "d/e/f.bin", "dir/", "spaces and+plus", "ünï.txt"])
    known = st.integers(0, len(HOSTILE_KEYS) - 1).map(HOSTILE_KEYS.__getitem__)
    choices = [(4, usual), (2, known), (2, hostile_text())]
    if not avoid_seed:
        choices.append((3, st.just(SEED_KEY)))
    return weighted(*choices).filter(lambda key: key != "")


def _buckets() -> Strategy[str]:
    known = st.integers(0, len(HOSTILE_BUCKETS) - 1).map(HOSTILE_BUCKETS.__getitem__)
    return weighted(
        (10, st.just(BUCKET)), (1, st.just("fz-other")), (1, known), (1, hostile_text())
    )


def _values() -> Strategy[str]:
    return hostile_text().map(latin1)


def _header_set(names: dict[str, Strategy[str]]) -> Strategy[tuple[tuple[str, str], ...]]:
    optional = {name: weighted((2, valid), (1, _values())) for name, valid in names.items()}
    return st.fixed_dictionaries({}, optional=optional).map(lambda h: tuple(h.items()))


def _base64_digest(algorithm: str) -> Strategy[str]:
    return st.binary(max_size=8).map(
        lambda data: base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    )


_OBJECT_HEADERS = {
    "content-type": st.sampled_from(["text/plain", "application/octet-stream", "a/b; c=d"]),
    "content-md5": _base64_digest("md5"),
    "x-amz-meta-note": st.text(max_size=20).map(latin1),
    "x-amz-checksum-sha256": _base64_digest("sha256"),
    "x-amz-checksum-crc32": st.just("AAAAAA=="),
    "cache-control": st.just("no-cache"),
    "content-disposition": st.just('attachment; filename="x"'),
    "expires": st.just("Thu, 01 Jan 2099 00:00:00 GMT"),
    "x-amz-storage-class": st.sampled_from(["STANDARD", "GLACIER"]),
    "if-none-match": st.just("*"),
}
_READ_HEADERS = {
    "range": st.sampled_from(RANGES),
    "if-match": st.sampled_from(['"x"', "*", '"a", W/"b"']),
    "if-none-match": st.sampled_from(['"x"', "*"]),
    "if-modified-since": st.sampled_from(["Thu, 01 Jan 1970 00:00:00 GMT", "yesterday"]),
    "if-unmodified-since": st.sampled_from(["Thu, 01 Jan 2099 00:00:00 GMT", "0"]),
    "x-amz-checksum-mode": st.just("ENABLED"),
}
_READ_QUERY = {
    "response-content-type": st.just("text/html"),
    "response-content-disposition": st.just("inline"),
    "partNumber": st.sampled_from(["1", "0", "10001", "99999999999999999999"]),
    "versionId": st.sampled_from(["null", "v1"]),
}


def _query(params: dict[str, Strategy[str]]) -> Strategy[tuple[tuple[str, str], ...]]:
    optional = {name: weighted((2, valid), (1, hostile_text())) for name, valid in params.items()}
    return st.fixed_dictionaries({}, optional=optional).map(lambda q: tuple(q.items()))


def _aws_chunked(data: bytes) -> bytes:
    checksum = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    return (
        f"{len(data):x}\r\n".encode()
        + data
        + f"\r\n0\r\nx-amz-checksum-crc32:{checksum}\r\n\r\n".encode()
    )


@st.composite
def _chunked_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """An aws-chunked body and its announced decoded length, sometimes corrupted."""
    data = draw(st.binary(max_size=64))
    body = _aws_chunked(data)
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=8)) + body[cut + draw(st.integers(0, 4)) :]
    length = draw(weighted((3, st.just(str(len(data)))), (1, _values())))
    return body, length


# --- XML bodies ----------------------------------------------------------------------------

RAW_XML = (
    b"",
    b"<",
    b"not xml",
    b"<Delete/>",
    b"<?xml version='1.0' encoding='utf-16'?><Delete/>",
    b"<!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
    b"<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>"
    b"<!ENTITY e '&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;'><!ENTITY f '&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;'>"
    b"]><Delete><Object><Key>&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;</Key></Object></Delete>",
    b"<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><Delete><Object><Key>&x;</Key>"
    b"</Object></Delete>",
    b"<a>" * 5000 + b"</a>" * 5000,
    b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
    b"<CompleteMultipartUpload>"
    + b"<Part><PartNumber>1</PartNumber></Part>" * 10001
    + b"</CompleteMultipartUpload>",
)


def _xml_text() -> Strategy[str]:
    return hostile_text().map(escape)


def _delete_documents() -> Strategy[bytes]:
    entry = st.builds(
        lambda key, version: f"<Object><Key>{escape(key)}</Key>{version}</Object>",
        _keys(avoid_seed=True),
        st.one_of(st.just(""), _xml_text().map(lambda v: f"<VersionId>{v}</VersionId>")),
    )
    document = st.builds(
        lambda quiet, entries, ns: f"<Delete{ns}>{quiet}{''.join(entries)}</Delete>",
        st.sampled_from(["", "<Quiet>true</Quiet>", "<Quiet>maybe</Quiet>"]),
        st.lists(entry, max_size=4),
        st.sampled_from(["", ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"']),
    )
    return _xml_bodies(document)


def _complete_documents(etags: list[str]) -> Strategy[bytes]:
    part = st.builds(
        lambda number, etag: f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>",
        weighted((3, st.sampled_from(["1", "2"])), (1, _xml_text())),
        weighted((3, st.sampled_from(etags)), (1, _xml_text())),
    )
    document = st.lists(part, max_size=3).map(
        lambda parts: f"<CompleteMultipartUpload>{''.join(parts)}</CompleteMultipartUpload>"
    )
    return _xml_bodies(document)


def _xml_bodies(documents: Strategy[str]) -> Strategy[bytes]:
    raw = st.integers(0, len(RAW_XML) - 1).map(RAW_XML.__getitem__)
    encoded = documents.map(lambda d: d.encode("utf-8", "surrogatepass"))
    return weighted((6, encoded), (1, raw), (1, st.binary(max_size=32)))


def _with_md5(body: bytes) -> tuple[tuple[str, str], ...]:
    return (("content-md5", base64.b64encode(hashlib.md5(body).digest()).decode()),)


# --- calls ---------------------------------------------------------------------------------


def _object_calls(uploads: list[str], etags: list[str]) -> Strategy[Call]:
    upload_ids = weighted((3, st.sampled_from(uploads)), (1, hostile_text()))
    part_numbers = weighted((3, st.integers(1, 3).map(str)), (1, hostile_text()))
    copy_sources = weighted(
        (2, st.just(f"/{BUCKET}/{SEED_KEY}")),
        (1, _keys().map(lambda key: f"{BUCKET}/{quote(key.encode('utf-8', 'surrogatepass'))}")),
        (1, _values()),
    )
    put = st.builds(
        lambda b, k, h, body, signing: Call(
            "PutObject", "PUT", b, k, headers=h, body=body, signing=signing
        ),
        _buckets(),
        _keys(avoid_seed=True),
        _header_set(_OBJECT_HEADERS),
        st.binary(max_size=256),
        st.sampled_from(["header", "sha256"]),
    )
    chunked = st.builds(
        lambda k, chunks, h: Call(
            "PutObject (aws-chunked)",
            "PUT",
            BUCKET,
            k,
            headers=(
                ("content-encoding", "aws-chunked"),
                ("x-amz-decoded-content-length", chunks[1]),
                ("x-amz-trailer", "x-amz-checksum-crc32"),
                *h,
            ),
            body=chunks[0],
            signing="trailer",
        ),
        _keys(avoid_seed=True),
        _chunked_bodies(),
        _header_set({"content-type": st.just("text/plain")}),
    )
    copy = st.builds(
        lambda k, source, h: Call(
            "CopyObject", "PUT", BUCKET, k, headers=(("x-amz-copy-source", source), *h)
        ),
        _keys(avoid_seed=True),
        copy_sources,
        _header_set(
            {
                "x-amz-metadata-directive": st.sampled_from(["COPY", "REPLACE"]),
                "x-amz-copy-source-if-match": st.just('"x"'),
                "x-amz-copy-source-if-modified-since": st.just("yesterday"),
            }
        ),
    )
    read = st.builds(
        lambda method, b, k, h, q: Call(f"{method.title()}Object", method, b, k, q, h),
        st.sampled_from(["GET", "HEAD"]),
        _buckets(),
        _keys(),
        _header_set(_READ_HEADERS),
        _query(_READ_QUERY),
    )
    delete = st.builds(
        lambda k, q: Call("DeleteObject", "DELETE", BUCKET, k, q),
        _keys(avoid_seed=True),
        _query({"versionId": st.just("null")}),
    )
    create = st.builds(
        lambda k, h: Call("CreateMultipartUpload", "POST", BUCKET, k, (("uploads", ""),), h),
        _keys(avoid_seed=True),
        _header_set(
            {
                "content-type": st.just("text/plain"),
                "x-amz-checksum-algorithm": st.sampled_from(["CRC32", "SHA256", "MD5"]),
            }
        ),
    )
    part = st.builds(
        lambda n, u, body: Call(
            "UploadPart", "PUT", BUCKET, "mp.bin", (("partNumber", n), ("uploadId", u)), body=body
        ),
        part_numbers,
        upload_ids,
        st.binary(max_size=64),
    )
    part_copy = st.builds(
        lambda n, u, source, r: Call(
            "UploadPartCopy",
            "PUT",
            BUCKET,
            "mp.bin",
            (("partNumber", n), ("uploadId", u)),
            (("x-amz-copy-source", source), ("x-amz-copy-source-range", r)),
        ),
        part_numbers,
        upload_ids,
        copy_sources,
        weighted((2, st.sampled_from(RANGES)), (1, _values())),
    )
    complete = st.builds(
        lambda u, body: Call(
            "CompleteMultipartUpload", "POST", BUCKET, "mp.bin", (("uploadId", u),), body=body
        ),
        upload_ids,
        _complete_documents(etags),
    )
    list_parts = st.builds(
        lambda u, q: Call("ListParts", "GET", BUCKET, "mp.bin", (("uploadId", u), *q)),
        upload_ids,
        _query({"max-parts": st.integers(0, 5).map(str), "part-number-marker": st.just("1")}),
    )
    abort = st.builds(
        lambda u: Call("AbortMultipartUpload", "DELETE", BUCKET, "mp.bin", (("uploadId", u),)),
        hostile_text(),
    )
    return weighted(
        (4, put),
        (2, chunked),
        (2, copy),
        (4, read),
        (1, delete),
        (1, create),
        (2, part),
        (1, part_copy),
        (2, complete),
        (1, list_parts),
        (1, abort),
    )


def _bucket_calls() -> Strategy[Call]:
    listing = {
        "prefix": st.sampled_from(["", "d/", "a"]),
        "delimiter": st.sampled_from(["/", "e"]),
        "max-keys": st.sampled_from(["0", "1", "1000", "-1", "99999999999999999999"]),
        "encoding-type": st.just("url"),
    }
    v2 = st.builds(
        lambda b, q: Call("ListObjectsV2", "GET", b, query=(("list-type", "2"), *q)),
        _buckets(),
        _query(
            {
                **listing,
                "continuation-token": st.sampled_from(["", "ZA==", "bm90IGEgdG9rZW4="]),
                "start-after": st.just("a"),
                "fetch-owner": st.just("true"),
            }
        ),
    )
    v1 = st.builds(
        lambda b, q: Call("ListObjects", "GET", b, query=q),
        _buckets(),
        _query({**listing, "marker": st.just("a")}),
    )
    versions = st.builds(
        lambda q: Call("ListObjectVersions", "GET", BUCKET, query=(("versions", ""), *q)),
        _query({**listing, "key-marker": st.just("a"), "version-id-marker": st.just("null")}),
    )
    uploads = st.builds(
        lambda q: Call("ListMultipartUploads", "GET", BUCKET, query=(("uploads", ""), *q)),
        _query(
            {
                **listing,
                "key-marker": st.just("a"),
                "upload-id-marker": st.just("x"),
                "max-uploads": st.sampled_from(["1", "-5", "abc"]),
            }
        ),
    )
    about = st.builds(
        lambda method, b, resource: Call(
            f"{method} bucket ?{resource}", method, b, query=((resource, ""),) if resource else ()
        ),
        st.sampled_from(["GET", "HEAD"]),
        _buckets(),
        st.sampled_from(["location", "versioning", "", "acl", "policy", "tagging", "cors"]),
    )
    create = st.builds(
        lambda b, body: Call("CreateBucket", "PUT", b, body=body),
        weighted((2, st.from_regex(r"fz-s3-[a-z0-9]{1,8}", fullmatch=True)), (1, _buckets())),
        st.one_of(
            st.just(b""),
            _xml_bodies(
                _xml_text().map(
                    lambda r: (
                        "<CreateBucketConfiguration><LocationConstraint>"
                        f"{r}</LocationConstraint></CreateBucketConfiguration>"
                    )
                )
            ),
        ),
    )
    delete_bucket = st.builds(
        lambda b: Call("DeleteBucket", "DELETE", b), _buckets().filter(lambda b: b != BUCKET)
    )
    delete_objects = st.builds(
        lambda body, md5: Call(
            "DeleteObjects",
            "POST",
            BUCKET,
            query=(("delete", ""),),
            headers=_with_md5(body) if md5 else (),
            body=body,
        ),
        _delete_documents(),
        st.booleans(),
    )
    list_buckets = st.just(Call("ListBuckets", "GET", ""))
    return weighted(
        (2, v2),
        (1, v1),
        (1, versions),
        (1, uploads),
        (2, about),
        (1, create),
        (1, delete_bucket),
        (3, delete_objects),
        (1, list_buckets),
    )


def _auth_calls() -> Strategy[Call]:
    """Signed requests with one part of their authentication made hostile after signing."""
    read = Call("GetObject (tampered auth)", "GET", BUCKET, SEED_KEY)
    header_parts = st.sampled_from(["authorization", "x-amz-date", "x-amz-content-sha256", "host"])
    query_parts = st.sampled_from(
        [
            "X-Amz-Expires",
            "X-Amz-Date",
            "X-Amz-Credential",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
        ]
    )
    credential = "AKAF/20240101/us-east-1/s3/aws4_request"
    authorization = _values().map(
        lambda v: f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={v}, Signature={v}"
    )
    return st.one_of(
        st.builds(
            lambda name, value: Call(read.label, "GET", BUCKET, SEED_KEY, tamper=((name, value),)),
            header_parts,
            weighted((2, _values()), (1, authorization)),
        ),
        st.builds(
            lambda name, value: Call(
                "GetObject (tampered presigned)",
                "GET",
                BUCKET,
                SEED_KEY,
                signing="presigned",
                tamper=((name, value),),
            ),
            query_parts,
            weighted((2, hostile_text()), (1, st.sampled_from(["0", "604801", "-1", "9" * 30]))),
        ),
        st.builds(
            lambda q: Call(
                "GetObject (SigV2 presigned)", "GET", BUCKET, SEED_KEY, q, signing="none"
            ),
            _query(
                {
                    "AWSAccessKeyId": st.just("AKAF"),
                    "Signature": st.just("x"),
                    "Expires": st.just("9999999999"),
                }
            ),
        ),
    )


def _designed(request: Request, outcome: Outcome) -> bool:
    """Sub-resources the server does not implement answer 501 NotImplemented, on purpose."""
    named = request.method == "HEAD" or b"NotImplemented" in outcome.body
    return outcome.status == 501 and named


def _allowed(request: Request, outcome: Outcome) -> bool:
    return _designed(request, outcome) or backpressure(request, outcome)


@dataclass
class _Multipart:
    uploads: list[str]
    etags: list[str]


def _multipart(target: Target) -> _Multipart:
    s3 = _client(target)
    uploads, etags = [], []
    for _ in range(3):
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key="mp.bin")["UploadId"]
        part = s3.upload_part(Bucket=BUCKET, Key="mp.bin", UploadId=upload, PartNumber=1, Body=b"p")
        uploads.append(upload)
        etags.append(part["ETag"])
    return _Multipart(uploads, etags)


def _client(target: Target) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=target.server.objects_url,
        aws_access_key_id=target.s3_credentials[0],
        aws_secret_access_key=target.s3_credentials[1],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


def test_s3_requests(target: Target) -> None:
    fuzzer = target.fuzzer("s3", s3=True)
    credentials = Credentials(*target.s3_credentials)
    staged = _multipart(target)

    def send(call: Call) -> None:
        fuzzer.send(_sign(call, target.s3_port, credentials), _allowed)

    @fuzz_settings(1000)
    @given(
        weighted(
            (6, _object_calls(staged.uploads, staged.etags)),
            (3, _bucket_calls()),
            (1, _auth_calls()),
        )
    )
    @example(Call("DeleteObjects", "POST", BUCKET, query=(("delete", ""),), body=RAW_XML[5]))
    @example(Call("DeleteObjects", "POST", BUCKET, query=(("delete", ""),), body=RAW_XML[6]))
    @example(Call("DeleteObjects", "POST", BUCKET, query=(("delete", ""),), body=RAW_XML[7]))
    @example(Call("PutObject", "PUT", BUCKET, "x", (), (("x-amz-meta-a", "b" * 8000),), b"x"))
    def probe(call: Call) -> None:
        send(call)

    probe()
    target.check()
    assert (
        _client(target).get_object(Bucket=BUCKET, Key=SEED_KEY)["Body"].read()
        == b"0123456789" * 100
    )


def test_versions_that_do_not_exist_delete_nothing(target: Target) -> None:
    """Every object has one version, ``null``: deleting any other version must not delete it.

    (DeleteObjects with a bogus VersionId deleted the current object.)
    """
    fuzzer = target.fuzzer("s3", s3=True)
    credentials = Credentials(*target.s3_credentials)
    versions = hostile_text().filter(lambda v: v not in ("", "null") and "\x00" not in v)

    @fuzz_settings(25)
    @given(versions, st.booleans())
    @example("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nrjfkd", True)
    @example("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nrjfkd", False)
    def probe(version: str, in_batch: bool) -> None:
        victim = Call("PutObject", "PUT", BUCKET, "victim.txt", body=b"still here")
        fuzzer.send(_sign(victim, target.s3_port, credentials))
        if in_batch:
            body = (
                f"<Delete><Object><Key>victim.txt</Key><VersionId>{escape(version)}</VersionId>"
                "</Object></Delete>"
            ).encode("utf-8", "surrogatepass")
            call = Call(
                "DeleteObjects (bogus VersionId)",
                "POST",
                BUCKET,
                query=(("delete", ""),),
                body=body,
            )
        else:
            call = Call(
                "DeleteObject (bogus versionId)",
                "DELETE",
                BUCKET,
                "victim.txt",
                (("versionId", version),),
            )
        request = _sign(call, target.s3_port, credentials)
        fuzzer.send(request)
        head = fuzzer.send(
            _sign(Call("HeadObject", "HEAD", BUCKET, "victim.txt"), target.s3_port, credentials)
        )
        if head.status != 200:
            fuzzer.record(request, "deleted the current object for a version that does not exist")

    probe()
    target.check()
