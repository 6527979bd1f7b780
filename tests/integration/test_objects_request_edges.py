"""Edges of S3 requests the conformance suite found answered wrongly, with boto3 and raw HTTP.

Re-creating one's own bucket, paginated ListBuckets, an empty continuation
token, query values that are not UTF-8, presigned URLs out of their time,
non-ASCII metadata, an empty Content-MD5, a PUT without Content-Length.
"""

from __future__ import annotations

import http.client
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from .objects_server import S3Server, start_objects_server

BUCKET = "edges"


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(tmp_path_factory.mktemp("objects-edges"))
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def pair(s3server: S3Server) -> tuple[str, str]:
    return s3server.issue("edges")


@pytest.fixture(scope="module")
def s3(s3server: S3Server, pair: tuple[str, str]) -> Any:
    client = s3server.client(pair, signature_version="s3v4")
    client.create_bucket(Bucket=BUCKET)
    return client


def _error(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def test_re_creating_ones_own_bucket_keeps_it_and_its_objects(s3server: S3Server, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="kept", Body=b"1")
    s3.create_bucket(Bucket=BUCKET)  # us-east-1: the owner's re-create succeeds
    assert s3.get_object(Bucket=BUCKET, Key="kept")["Body"].read() == b"1"
    other = s3server.client(s3server.issue("edges-other"))
    with pytest.raises(ClientError) as taken:
        other.create_bucket(Bucket=BUCKET)
    assert _error(taken.value) == (409, "BucketAlreadyExists")


def test_list_buckets_pages_with_max_buckets_and_a_continuation_token(s3server: S3Server) -> None:
    client = s3server.client(s3server.issue("pager"))
    assert client.list_buckets(MaxBuckets=1)["Buckets"] == []
    for name in ("pager-a", "pager-b", "pager-c"):
        client.create_bucket(Bucket=name)
    first = client.list_buckets(MaxBuckets=2)
    assert [b["Name"] for b in first["Buckets"]] == ["pager-a", "pager-b"]
    rest = client.list_buckets(MaxBuckets=2, ContinuationToken=first["ContinuationToken"])
    assert [b["Name"] for b in rest["Buckets"]] == ["pager-c"] and "ContinuationToken" not in rest
    assert [b["Name"] for b in client.list_buckets(Prefix="pager-b")["Buckets"]] == ["pager-b"]


def test_an_empty_continuation_token_lists_from_the_start(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="a", Body=b"")
    listed = s3.list_objects_v2(Bucket=BUCKET, ContinuationToken="")
    assert listed["ContinuationToken"] == "" and "a" in [o["Key"] for o in listed["Contents"]]


def test_a_query_value_that_is_not_utf8_is_a_bad_request(s3: Any) -> None:
    url = s3.generate_presigned_url("list_objects_v2", Params={"Bucket": BUCKET})
    response = requests.get(url + "&prefix=%ff%fe", timeout=10)
    assert response.status_code == 400
    assert ET.fromstring(response.content).findtext("Code") == "InvalidArgument"


@pytest.mark.parametrize("expires_in", [-1000, 0])
def test_a_presigned_url_already_expired_is_access_denied(
    s3server: S3Server, pair: tuple[str, str], s3: Any, expires_in: int
) -> None:
    s3.put_object(Bucket=BUCKET, Key="timed", Body=b"t")
    # botocore's own signer: the CRT one boto3 prefers refuses to sign these at all.
    request = AWSRequest("GET", f"{s3server.url}/{BUCKET}/timed")
    signer = S3SigV4QueryAuth(Credentials(*pair), "s3", "us-east-1", expires=expires_in)
    signer.add_auth(request)
    response = requests.get(request.url, timeout=10)
    assert response.status_code == 403, response.text
    assert ET.fromstring(response.content).findtext("Code") == "AccessDenied"


def test_non_ascii_metadata_is_signed_stored_and_returned(s3: Any) -> None:
    def add_latin1_metadata(params: dict[str, Any], **_: Any) -> None:
        params["headers"]["x-amz-meta-greeting"] = "Hello World\xe9"

    s3.meta.events.register("before-call.s3.PutObject", add_latin1_metadata)
    try:
        s3.put_object(Bucket=BUCKET, Key="greeting", Body=b"hi")
    finally:
        s3.meta.events.unregister("before-call.s3.PutObject", add_latin1_metadata)
    assert s3.get_object(Bucket=BUCKET, Key="greeting")["Metadata"] == {
        "greeting": "Hello World\xe9"
    }


def test_an_empty_content_md5_is_an_invalid_digest(s3: Any) -> None:
    def empty_md5(params: dict[str, Any], **_: Any) -> None:
        params["headers"]["Content-MD5"] = ""

    s3.meta.events.register("before-call.s3.PutObject", empty_md5)
    try:
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket=BUCKET, Key="md5", Body=b"bar")
    finally:
        s3.meta.events.unregister("before-call.s3.PutObject", empty_md5)
    assert _error(refused.value) == (400, "InvalidDigest")


def test_a_put_without_content_length_is_refused_411(s3server: S3Server, s3: Any) -> None:
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": "nolength"}, HttpMethod="PUT"
    )
    connection = http.client.HTTPConnection("127.0.0.1", s3server.port, timeout=10)
    connection.putrequest("PUT", url.split(str(s3server.port), 1)[1])
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 411, body
    assert ET.fromstring(body).findtext("Code") == "MissingContentLength"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="nolength")


def test_listobjects_v1_answers_its_prefix_as_sent(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="line\nbreak", Body=b"")
    listed = s3.list_objects(Bucket=BUCKET, Prefix="\n")
    assert listed["Prefix"] == "\n" and "Contents" not in listed
    assert s3.list_objects(Bucket=BUCKET, Prefix="line\n")["Contents"][0]["Key"] == "line\nbreak"


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("deflate, gzip", "deflate, gzip"),
        ("aws-chunked, gzip, br", "gzip, br"),
        ("aws-chunked", None),
    ],
)
def test_content_encoding_is_kept_as_sent_less_aws_chunked(
    s3: Any, sent: str, stored: str | None
) -> None:
    s3.put_object(Bucket=BUCKET, Key="encoded", Body=b"x", ContentEncoding=sent)
    assert s3.head_object(Bucket=BUCKET, Key="encoded").get("ContentEncoding") == stored


def test_a_copy_source_key_with_a_question_mark_is_copied(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="?versionId", Body=b"odd name")
    s3.copy_object(Bucket=BUCKET, Key="copied", CopySource={"Bucket": BUCKET, "Key": "?versionId"})
    assert s3.get_object(Bucket=BUCKET, Key="copied")["Body"].read() == b"odd name"


def test_a_part_listed_twice_completes_with_its_last_upload(s3: Any) -> None:
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="twice")["UploadId"]
    first = s3.upload_part(Bucket=BUCKET, Key="twice", UploadId=upload, PartNumber=1, Body=b"B")
    last = s3.upload_part(Bucket=BUCKET, Key="twice", UploadId=upload, PartNumber=1, Body=b"A")
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="twice",
        UploadId=upload,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": first["ETag"]},
                {"PartNumber": 1, "ETag": last["ETag"]},
            ]
        },
    )
    assert s3.get_object(Bucket=BUCKET, Key="twice")["Body"].read() == b"A"


def test_object_attributes_list_the_parts_a_page_at_a_time(s3: Any) -> None:
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="parted")["UploadId"]
    sizes = [5 * 1024 * 1024] * 3 + [7]
    parts = [
        {"PartNumber": n, "ETag": s3.upload_part(
            Bucket=BUCKET, Key="parted", UploadId=upload, PartNumber=n, Body=b"p" * size
        )["ETag"]}
        for n, size in enumerate(sizes, start=1)
    ]  # fmt: skip
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="parted", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    wanted = ["ObjectParts", "ObjectSize"]
    whole = s3.get_object_attributes(Bucket=BUCKET, Key="parted", ObjectAttributes=wanted)
    listed = whole["ObjectParts"]
    assert listed["TotalPartsCount"] == 4 and listed["IsTruncated"] is False
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == list(
        enumerate(sizes, start=1)
    )
    page = s3.get_object_attributes(
        Bucket=BUCKET, Key="parted", ObjectAttributes=wanted, MaxParts=2, PartNumberMarker=1
    )["ObjectParts"]
    assert [p["PartNumber"] for p in page["Parts"]] == [2, 3]
    assert page["IsTruncated"] is True and page["NextPartNumberMarker"] == 3
    assert page["MaxParts"] == 2 and page["PartNumberMarker"] == 1


def test_each_parts_checksum_is_kept_for_part_reads_and_attributes(s3: Any) -> None:
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="summed", ChecksumAlgorithm="SHA256")[
        "UploadId"
    ]
    bodies = [b"a" * 5 * 1024 * 1024, b"b" * 1024]
    parts = []
    for number, body in enumerate(bodies, start=1):
        sent = s3.upload_part(
            Bucket=BUCKET, Key="summed", UploadId=upload, PartNumber=number, Body=body,
            ChecksumAlgorithm="SHA256",
        )  # fmt: skip
        parts.append(
            {"PartNumber": number, "ETag": sent["ETag"], "ChecksumSHA256": sent["ChecksumSHA256"]}
        )
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="summed", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    attributes = s3.get_object_attributes(
        Bucket=BUCKET, Key="summed", ObjectAttributes=["ObjectParts"]
    )
    listed = attributes["ObjectParts"]["Parts"]
    assert [p["ChecksumSHA256"] for p in listed] == [p["ChecksumSHA256"] for p in parts]
    second = s3.get_object(Bucket=BUCKET, Key="summed", PartNumber=2, ChecksumMode="ENABLED")
    assert second["Body"].read() == bodies[1]  # boto3 checks the part's checksum as it reads
    assert second["ChecksumSHA256"] == parts[1]["ChecksumSHA256"]
    assert second["ChecksumType"] == "COMPOSITE"  # the object's, as S3 answers
