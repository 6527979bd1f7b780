"""S3 requests the fuzz suite found mishandled: bogus version ids, unsendable response overrides."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from .objects_server import S3Server, start_objects_server

BOGUS_VERSION = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nrjfkd"


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(tmp_path_factory.mktemp("objects-checks"))
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def s3(s3server: S3Server) -> Any:
    client = s3server.client(s3server.issue("checks"))
    client.create_bucket(Bucket="checks")
    return client


def _code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


def test_a_version_that_does_not_exist_is_neither_read_nor_deleted(s3: Any) -> None:
    s3.put_object(Bucket="checks", Key="kept", Body=b"still here")
    with pytest.raises(ClientError) as deleting:
        s3.delete_object(Bucket="checks", Key="kept", VersionId=BOGUS_VERSION)
    assert _code(deleting.value) == "NoSuchVersion"
    with pytest.raises(ClientError) as reading:
        s3.get_object(Bucket="checks", Key="kept", VersionId=BOGUS_VERSION)
    assert _code(reading.value) == "NoSuchVersion"
    with pytest.raises(ClientError) as heading:
        s3.head_object(Bucket="checks", Key="kept", VersionId=BOGUS_VERSION)
    assert heading.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert s3.get_object(Bucket="checks", Key="kept")["Body"].read() == b"still here"
    # Every object's one version is "null", as ListObjectVersions says.
    assert s3.get_object(Bucket="checks", Key="kept", VersionId="null")["Body"].read()
    s3.delete_object(Bucket="checks", Key="kept", VersionId="null")
    with pytest.raises(ClientError) as gone:
        s3.head_object(Bucket="checks", Key="kept")
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_a_response_override_no_header_can_carry_is_refused(s3: Any) -> None:
    s3.put_object(Bucket="checks", Key="page", Body=b"<p>")
    url = s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": "checks", "Key": "page", "ResponseContentDisposition": "a\x1cb"},
    )
    response = httpx.get(url)
    assert response.status_code == 400, response.text
    assert "<Code>InvalidArgument</Code>" in response.text
    assert "response-content-disposition" in response.text


def test_a_signature_with_non_ascii_characters_does_not_match(s3server: S3Server) -> None:
    access, secret = s3server.issue("checks")
    v4 = s3server.client((access, secret), signature_version="s3v4")
    v4.put_object(Bucket="checks", Key="signed", Body=b"x")
    presigned = v4.generate_presigned_url(
        "get_object", Params={"Bucket": "checks", "Key": "signed"}
    )
    path = presigned.partition("?")[0]
    signature = presigned.partition("X-Amz-Signature=")[2]
    now = datetime.now(UTC)
    scope = f"{access}/{now:%Y%m%d}/us-east-1/s3/aws4_request"
    authorization = f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=\xe9"
    for attempt in (
        httpx.get(presigned.replace(f"X-Amz-Signature={signature}", "X-Amz-Signature=%C3%A9")),
        httpx.get(f"{path}?AWSAccessKeyId={access}&Expires=9999999999&Signature=%C3%A9"),
        httpx.get(
            path,
            headers={
                "Authorization": authorization.encode("latin-1"),
                "x-amz-date": f"{now:%Y%m%dT%H%M%SZ}",
                "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
            },
        ),
    ):
        assert attempt.status_code == 403, attempt.text
        assert "<Code>SignatureDoesNotMatch</Code>" in attempt.text
