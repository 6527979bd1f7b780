"""The S3 API end to end with boto3 against a real `aifactory objects serve`."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from .objects_server import S3Server, start_objects_server

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(tmp_path_factory.mktemp("objects"))
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def alice(s3server: S3Server) -> tuple[str, str]:
    return s3server.issue("alice")


@pytest.fixture(scope="module")
def s3(s3server: S3Server, alice: tuple[str, str]) -> Any:
    client = s3server.client(alice)
    client.create_bucket(Bucket="data")
    return client


def _code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


def test_put_get_head_list_delete(s3: Any, s3server: S3Server) -> None:
    put = s3.put_object(
        Bucket="data",
        Key="run1/metrics.json",
        Body=b'{"loss": 0.1}',
        ContentType="application/json",
        Metadata={"Experiment": "E-42"},
    )
    body = b'{"loss": 0.1}'
    assert put["ETag"] == '"' + hashlib.md5(body).hexdigest() + '"'
    got = s3.get_object(Bucket="data", Key="run1/metrics.json")
    assert got["Body"].read() == b'{"loss": 0.1}'
    assert got["ContentType"] == "application/json"
    assert got["Metadata"] == {"experiment": "E-42"}
    head = s3.head_object(Bucket="data", Key="run1/metrics.json")
    assert head["ContentLength"] == 13 and head["ETag"] == put["ETag"]
    # The object is a plain file where a batch job expects it.
    assert (s3server.root / "data" / "run1" / "metrics.json").read_bytes() == b'{"loss": 0.1}'
    listed = s3.list_objects_v2(Bucket="data", Prefix="run1/")
    assert [o["Key"] for o in listed["Contents"]] == ["run1/metrics.json"]
    s3.delete_object(Bucket="data", Key="run1/metrics.json")
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket="data", Key="run1/metrics.json")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="data", Key="run1/metrics.json")
    assert _code(caught.value) == "NoSuchKey"
    assert caught.value.response["Error"].get("RequestId") or caught.value.response[
        "ResponseMetadata"
    ].get("RequestId")
    assert not (s3server.root / "data" / "run1").exists()


def test_posix_files_are_objects(s3: Any, s3server: S3Server) -> None:
    job_dir = s3server.root / "data" / "job-7"
    job_dir.mkdir()
    (job_dir / "out.txt").write_text("written by an HPC job\n")
    assert s3.get_object(Bucket="data", Key="job-7/out.txt")["Body"].read() == (
        b"written by an HPC job\n"
    )
    listed = s3.list_objects_v2(Bucket="data", Prefix="job-7/")["Contents"]
    assert listed[0]["Key"] == "job-7/out.txt" and listed[0]["Size"] == 22
    s3.delete_object(Bucket="data", Key="job-7/out.txt")


def test_multipart_upload(s3: Any, s3server: S3Server) -> None:
    data = os.urandom(12 * MiB + 123)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_fileobj(io.BytesIO(data), "data", "big/model.bin", Config=config)
    head = s3.head_object(Bucket="data", Key="big/model.bin", ChecksumMode="ENABLED")
    md5s = b"".join(
        hashlib.md5(data[i : i + 5 * MiB]).digest() for i in range(0, len(data), 5 * MiB)
    )
    assert head["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
    assert head["ContentLength"] == len(data)
    assert (s3server.root / "data" / "big" / "model.bin").read_bytes() == data
    out = io.BytesIO()
    s3.download_fileobj("data", "big/model.bin", out, Config=config)
    assert out.getvalue() == data
    staging = s3server.root / ".aifactory" / "uploads" / "data"
    # Only the completion's record stays (for a retried completion), none of the parts.
    assert [path.name for path in staging.iterdir()] == [".completed"]
    assert all(path.suffix == ".json" for path in (staging / ".completed").iterdir())


def test_multipart_rules(s3: Any) -> None:
    upload = s3.create_multipart_upload(Bucket="data", Key="mp/small")["UploadId"]
    first = s3.upload_part(
        Bucket="data", Key="mp/small", UploadId=upload, PartNumber=1, Body=b"a" * 100
    )
    second = s3.upload_part(Bucket="data", Key="mp/small", UploadId=upload, PartNumber=2, Body=b"b")
    parts = s3.list_parts(Bucket="data", Key="mp/small", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 100), (2, 1)]
    listed = s3.list_multipart_uploads(Bucket="data")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("mp/small", upload)]
    complete = {
        "Parts": [
            {"PartNumber": 1, "ETag": first["ETag"]},
            {"PartNumber": 2, "ETag": second["ETag"]},
        ]
    }
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(
            Bucket="data", Key="mp/small", UploadId=upload, MultipartUpload=complete
        )
    assert _code(caught.value) == "EntityTooSmall"
    wrong = {"Parts": [{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]}
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(
            Bucket="data", Key="mp/small", UploadId=upload, MultipartUpload=wrong
        )
    assert _code(caught.value) == "InvalidPart"
    reversed_parts = {"Parts": list(reversed(complete["Parts"]))}
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(
            Bucket="data", Key="mp/small", UploadId=upload, MultipartUpload=reversed_parts
        )
    assert _code(caught.value) == "InvalidPartOrder"
    single = {"Parts": [{"PartNumber": 2, "ETag": second["ETag"]}]}
    done = s3.complete_multipart_upload(
        Bucket="data", Key="mp/small", UploadId=upload, MultipartUpload=single
    )
    assert done["ETag"].endswith('-1"')
    assert s3.get_object(Bucket="data", Key="mp/small")["Body"].read() == b"b"
    aborted = s3.create_multipart_upload(Bucket="data", Key="mp/gone")["UploadId"]
    s3.abort_multipart_upload(Bucket="data", Key="mp/gone", UploadId=aborted)
    with pytest.raises(ClientError) as caught:
        s3.list_parts(Bucket="data", Key="mp/gone", UploadId=aborted)
    assert _code(caught.value) == "NoSuchUpload"


def test_upload_part_copy(s3: Any) -> None:
    source = os.urandom(6 * MiB)
    s3.put_object(Bucket="data", Key="src/blob", Body=source)
    upload = s3.create_multipart_upload(Bucket="data", Key="dst/blob")["UploadId"]
    first = s3.upload_part_copy(
        Bucket="data",
        Key="dst/blob",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": "data", "Key": "src/blob"},
        CopySourceRange=f"bytes=0-{5 * MiB - 1}",
    )["CopyPartResult"]
    second = s3.upload_part(
        Bucket="data", Key="dst/blob", UploadId=upload, PartNumber=2, Body=b"tail"
    )
    s3.complete_multipart_upload(
        Bucket="data",
        Key="dst/blob",
        UploadId=upload,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": first["ETag"]},
                {"PartNumber": 2, "ETag": second["ETag"]},
            ]
        },
    )
    assert (
        s3.get_object(Bucket="data", Key="dst/blob")["Body"].read() == source[: 5 * MiB] + b"tail"
    )


def test_copy_object(s3: Any) -> None:
    s3.put_object(
        Bucket="data", Key="orig", Body=b"payload", ContentType="text/plain", Metadata={"a": "1"}
    )
    etag = s3.head_object(Bucket="data", Key="orig")["ETag"]
    copied = s3.copy_object(Bucket="data", Key="copy", CopySource={"Bucket": "data", "Key": "orig"})
    assert copied["CopyObjectResult"]["ETag"] == etag
    head = s3.head_object(Bucket="data", Key="copy")
    assert head["Metadata"] == {"a": "1"} and head["ContentType"] == "text/plain"
    s3.copy_object(
        Bucket="data",
        Key="copy",
        CopySource={"Bucket": "data", "Key": "orig"},
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
        ContentType="application/x-test",
    )
    head = s3.head_object(Bucket="data", Key="copy")
    assert head["Metadata"] == {"b": "2"} and head["ContentType"] == "application/x-test"
    with pytest.raises(ClientError) as caught:
        s3.copy_object(
            Bucket="data",
            Key="copy",
            CopySource={"Bucket": "data", "Key": "orig"},
            CopySourceIfMatch='"nope"',
        )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as caught:
        s3.copy_object(Bucket="data", Key="orig", CopySource={"Bucket": "data", "Key": "orig"})
    assert _code(caught.value) == "InvalidRequest"


def test_ranges_and_conditional_reads(s3: Any) -> None:
    body = bytes(range(256)) * 4
    etag = s3.put_object(Bucket="data", Key="ranged", Body=body)["ETag"]
    # With ChecksumMode=ENABLED boto3 checks any full-object checksum: a 206 must carry none.
    part = s3.get_object(Bucket="data", Key="ranged", Range="bytes=10-19", ChecksumMode="ENABLED")
    assert part["Body"].read() == body[10:20] and part["ContentRange"] == "bytes 10-19/1024"
    assert "ChecksumCRC32" not in part
    assert s3.get_object(Bucket="data", Key="ranged", Range="bytes=-4")["Body"].read() == body[-4:]
    assert (
        s3.get_object(Bucket="data", Key="ranged", Range="bytes=1020-")["Body"].read()
        == body[1020:]
    )
    whole = s3.get_object(Bucket="data", Key="ranged", ChecksumMode="ENABLED")
    assert whole["Body"].read() == body and whole["ChecksumCRC32"]
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="data", Key="ranged", Range="bytes=5000-")
    assert _code(caught.value) == "InvalidRange"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="data", Key="ranged", IfNoneMatch=etag)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="data", Key="ranged", IfMatch='"other"')
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket="data", Key="ranged", IfMatch=etag)["Body"].read() == body
    future = time.time() + 3600
    from datetime import UTC, datetime

    with pytest.raises(ClientError) as caught:
        s3.get_object(
            Bucket="data", Key="ranged", IfModifiedSince=datetime.fromtimestamp(future, UTC)
        )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as caught:
        s3.get_object(
            Bucket="data", Key="ranged", IfUnmodifiedSince=datetime(2000, 1, 1, tzinfo=UTC)
        )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    overridden = s3.get_object(
        Bucket="data",
        Key="ranged",
        ResponseContentType="text/x-custom",
        ResponseContentDisposition="attachment; filename=r.bin",
    )
    assert overridden["ContentType"] == "text/x-custom"
    assert overridden["ContentDisposition"] == "attachment; filename=r.bin"


def test_presigned_urls_sigv2_and_sigv4(
    s3server: S3Server, alice: tuple[str, str], s3: Any
) -> None:
    s3.put_object(Bucket="data", Key="shared/report.txt", Body=b"report")
    v2 = s3server.client(alice)
    url = v2.generate_presigned_url(
        "get_object", Params={"Bucket": "data", "Key": "shared/report.txt"}
    )
    assert "AWSAccessKeyId=" in url and "Signature=" in url
    assert httpx.get(url).content == b"report"
    v4 = s3server.client(alice, signature_version="s3v4")
    url = v4.generate_presigned_url(
        "get_object", Params={"Bucket": "data", "Key": "shared/report.txt"}
    )
    assert "X-Amz-Signature=" in url
    assert httpx.get(url).content == b"report"
    put_url = v4.generate_presigned_url(
        "put_object", Params={"Bucket": "data", "Key": "shared/up.txt"}
    )
    assert httpx.put(put_url, content=b"via presign").status_code == 200
    assert s3.get_object(Bucket="data", Key="shared/up.txt")["Body"].read() == b"via presign"
    tampered = url.replace("report.txt", "up.txt")
    assert httpx.get(tampered).status_code == 403
    expired_v4 = v4.generate_presigned_url(
        "get_object", Params={"Bucket": "data", "Key": "shared/report.txt"}, ExpiresIn=1
    )
    expired_v2 = v2.generate_presigned_url(
        "get_object", Params={"Bucket": "data", "Key": "shared/report.txt"}, ExpiresIn=1
    )
    time.sleep(2.1)
    for expired in (expired_v4, expired_v2):
        response = httpx.get(expired)
        assert response.status_code == 403 and b"expired" in response.content
    too_long = v4.generate_presigned_url(
        "get_object", Params={"Bucket": "data", "Key": "shared/report.txt"}, ExpiresIn=8 * 24 * 3600
    )
    assert httpx.get(too_long).status_code == 400


def test_wrong_secret_anonymous_and_unknown_keys_are_rejected(
    s3server: S3Server, alice: tuple[str, str]
) -> None:
    wrong = s3server.client((alice[0], "not-the-secret" + alice[1][14:]))
    with pytest.raises(ClientError) as caught:
        wrong.list_objects_v2(Bucket="data")
    assert _code(caught.value) == "SignatureDoesNotMatch"
    unknown = s3server.client(("AKAF0000000000000000", alice[1]))
    with pytest.raises(ClientError) as caught:
        unknown.list_buckets()
    assert _code(caught.value) == "InvalidAccessKeyId"
    anonymous = httpx.get(f"{s3server.url}/data/shared/report.txt")
    assert anonymous.status_code == 403 and b"<Code>AccessDenied</Code>" in anonymous.content
    assert b"<RequestId>" in anonymous.content
    head = httpx.head(f"{s3server.url}/data/shared/report.txt")
    assert head.status_code == 403 and head.content == b""


def test_tenants_are_isolated(s3server: S3Server, s3: Any) -> None:
    bob = s3server.client(s3server.issue("bob"))
    with pytest.raises(ClientError) as caught:
        bob.list_objects_v2(Bucket="data")
    assert _code(caught.value) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        bob.put_object(Bucket="data", Key="intruder", Body=b"x")
    assert _code(caught.value) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        bob.create_bucket(Bucket="data")
    assert _code(caught.value) == "BucketAlreadyExists"
    assert "data" not in [b["Name"] for b in bob.list_buckets()["Buckets"]]
    admin = s3server.client(s3server.issue("ops", role="admin"))
    assert "data" in [b["Name"] for b in admin.list_buckets()["Buckets"]]


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("../../outside.txt", "InvalidArgument"),
        ("a/../../outside.txt", "InvalidArgument"),
        ("nul\0byte", "InvalidArgument"),
        ("x" * 1100, "KeyTooLongError"),
        ("dir/.aifactory-tmp-0000", "InvalidArgument"),
        ("a//b", "InvalidArgument"),
    ],
    ids=["traversal", "inner-traversal", "nul", "huge", "staging-name", "empty-segment"],
)
def test_hostile_keys_are_refused_and_nothing_lands_outside(
    s3: Any, s3server: S3Server, key: str, code: str
) -> None:
    before = sorted(p.name for p in s3server.data_dir.iterdir())
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="data", Key=key, Body=b"evil")
    assert _code(caught.value) == code
    assert sorted(p.name for p in s3server.data_dir.iterdir()) == before
    assert not (s3server.data_dir.parent / "outside.txt").exists()


def test_directory_markers_and_file_directory_clashes(s3: Any) -> None:
    s3.put_object(Bucket="data", Key="folder/", Body=b"")
    listed = s3.list_objects_v2(Bucket="data", Prefix="folder/")
    assert [o["Key"] for o in listed["Contents"]] == ["folder/"]
    assert s3.head_object(Bucket="data", Key="folder/")["ContentLength"] == 0
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="data", Key="folder-with-data/", Body=b"x")
    assert _code(caught.value) == "DirectoryObjectContainsData"
    s3.put_object(Bucket="data", Key="plain", Body=b"1")
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="data", Key="plain/child", Body=b"2")
    assert _code(caught.value) == "ObjectParentIsFile"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="data", Key="folder", Body=b"3")
    assert _code(caught.value) == "ExistingObjectIsDirectory"
    s3.delete_object(Bucket="data", Key="folder/")
    s3.delete_object(Bucket="data", Key="plain")


def test_listings_in_byte_order_with_pages_and_url_encoding(s3: Any, s3server: S3Server) -> None:
    s3.create_bucket(Bucket="order", CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
    keys = ["foo/a", "foo+1/b", "foo.txt", "foo0", "ü/x", "sp ace/y", "q?&=#/z"]
    for key in keys:
        s3.put_object(Bucket="order", Key=key, Body=b"")
    expected = sorted(keys, key=lambda k: k.encode())
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="order", PaginationConfig={"PageSize": 2}
    )
    assert [o["Key"] for page in pages for o in page.get("Contents", [])] == expected
    pages_v1 = s3.get_paginator("list_objects").paginate(
        Bucket="order", PaginationConfig={"PageSize": 2}
    )
    assert [o["Key"] for page in pages_v1 for o in page.get("Contents", [])] == expected
    grouped = s3.list_objects_v2(Bucket="order", Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == [
        "foo+1/",
        "foo/",
        "q?&=#/",
        "sp ace/",
        "ü/",
    ]
    assert [o["Key"] for o in grouped["Contents"]] == ["foo.txt", "foo0"]
    # boto3 asks for encoding-type=url and decodes the answer itself.
    raw = httpx.get(s3server.client(("x", "y")).meta.endpoint_url + "/order")
    assert raw.status_code == 403
    after = s3.list_objects_v2(Bucket="order", StartAfter="foo/a")
    assert next(o["Key"] for o in after["Contents"]) == "foo0"
    versions = s3.list_object_versions(Bucket="order", Prefix="foo")
    assert {v["VersionId"] for v in versions["Versions"]} == {"null"}
    assert s3.get_bucket_versioning(Bucket="order").get("Status") is None
    assert s3.get_bucket_location(Bucket="order")["LocationConstraint"] is None
    deleted = s3.delete_objects(
        Bucket="order",
        Delete={"Objects": [{"Key": k} for k in keys] + [{"Key": "foo/"}, {"Key": "../x"}]},
    )
    assert len(deleted["Deleted"]) == len(keys) + 1
    assert [e["Key"] for e in deleted["Errors"]] == ["../x"]
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="order", Key="again", Body=b"")
        s3.delete_bucket(Bucket="order")
    assert _code(caught.value) == "BucketNotEmpty"
    s3.delete_object(Bucket="order", Key="again")
    s3.delete_bucket(Bucket="order")
    with pytest.raises(ClientError) as caught:
        s3.head_bucket(Bucket="order")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_completing_an_upload_again_answers_the_same(s3: Any) -> None:
    upload = s3.create_multipart_upload(Bucket="data", Key="mp/again", ChecksumAlgorithm="SHA256")[
        "UploadId"
    ]
    etag = s3.upload_part(
        Bucket="data", Key="mp/again", UploadId=upload, PartNumber=1, Body=b"only part",
        ChecksumAlgorithm="SHA256",
    )["ETag"]  # fmt: skip
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    first = s3.complete_multipart_upload(
        Bucket="data", Key="mp/again", UploadId=upload, MultipartUpload=parts
    )
    again = s3.complete_multipart_upload(
        Bucket="data", Key="mp/again", UploadId=upload, MultipartUpload=parts
    )
    assert again["ETag"] == first["ETag"] and again["ChecksumSHA256"] == first["ChecksumSHA256"]
    assert s3.get_object(Bucket="data", Key="mp/again")["Body"].read() == b"only part"
    assert not s3.list_multipart_uploads(Bucket="data", Prefix="mp/again").get("Uploads")
    # Once the object is replaced, the upload is gone for good.
    s3.put_object(Bucket="data", Key="mp/again", Body=b"newer")
    with pytest.raises(ClientError) as gone:
        s3.complete_multipart_upload(
            Bucket="data", Key="mp/again", UploadId=upload, MultipartUpload=parts
        )
    assert _code(gone.value) == "NoSuchUpload"


def test_copy_source_ranges_are_exact_or_refused(s3: Any) -> None:
    s3.put_object(Bucket="data", Key="src/five", Body=b"12345")
    upload = s3.create_multipart_upload(Bucket="data", Key="dst/five")["UploadId"]

    def copy(byte_range: str) -> tuple[int, str]:
        with pytest.raises(ClientError) as caught:
            s3.upload_part_copy(
                Bucket="data", Key="dst/five", UploadId=upload, PartNumber=1,
                CopySource={"Bucket": "data", "Key": "src/five"}, CopySourceRange=byte_range,
            )  # fmt: skip
        status = caught.value.response["ResponseMetadata"]["HTTPStatusCode"]
        return status, _code(caught.value)

    assert copy("bytes=0-21") == (416, "InvalidRange")
    # A directory marker is an empty source, not a directory to read.
    s3.put_object(Bucket="data", Key="src/marker/", Body=b"")
    marker = {"Bucket": "data", "Key": "src/marker/"}
    empty = s3.upload_part_copy(
        Bucket="data", Key="dst/five", UploadId=upload, PartNumber=2, CopySource=marker
    )
    assert empty["CopyPartResult"]["ETag"].strip('"') == hashlib.md5(b"").hexdigest()
    malformed_ranges = ("0-2", "bytes=0", "bytes=hello-world", "bytes=0-bar", "bytes=0-2,3-5")
    for malformed in (*malformed_ranges, "bytes=-2", "bytes=3-1"):
        assert copy(malformed) == (400, "InvalidArgument"), malformed


def test_concurrent_writers_of_one_key_never_mix(
    s3server: S3Server, alice: tuple[str, str]
) -> None:
    size = 3 * MiB
    clients = [s3server.client(alice) for _ in range(5)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(index: int) -> None:
        try:
            for _ in range(4):
                clients[index].put_object(
                    Bucket="data", Key="contended", Body=bytes([65 + index]) * size
                )
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        while not stop.is_set():
            try:
                body = clients[4].get_object(Bucket="data", Key="contended")["Body"].read()
            except ClientError:
                continue  # NoSuchKey before the first write lands
            except BaseException as exc:  # a checksum that does not match the body, above all
                errors.append(exc)
                return
            if len(body) != size or body.count(body[:1]) != size:
                errors.append(AssertionError("a reader saw a mixed object"))

    writers = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert errors == []
    data = (s3server.root / "data" / "contended").read_bytes()
    assert data.count(data[:1]) == size
    assert [
        p.name for p in (s3server.root / "data").iterdir() if p.name.startswith(".aifactory")
    ] == []


def test_checksums_are_verified(s3: Any, s3server: S3Server) -> None:
    put = s3.put_object(Bucket="data", Key="summed", Body=b"abc", ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
    head = s3.head_object(Bucket="data", Key="summed", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == put["ChecksumSHA256"]
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="data", Key="bad-sum", Body=b"abc", ChecksumCRC32C="AAAAAA==")
    assert _code(caught.value) == "BadDigest"
    with pytest.raises(ClientError) as caught:
        s3.put_object(
            Bucket="data", Key="bad-md5", Body=b"abc", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg=="
        )
    assert _code(caught.value) == "BadDigest"
    assert not (s3server.root / "data" / "bad-sum").exists()
