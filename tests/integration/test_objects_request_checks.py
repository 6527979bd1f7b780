"""S3 requests the fuzz suite found mishandled: bogus version ids, unsendable response overrides."""

from __future__ import annotations

from collections.abc import Iterator
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
