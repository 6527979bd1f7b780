"""Conditional writes (If-Match, If-None-Match on PUT and on multipart completion), with boto3."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from .objects_server import S3Server, start_objects_server

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(tmp_path_factory.mktemp("objects-conditional"))
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def credentials(s3server: S3Server) -> tuple[str, str]:
    return s3server.issue("conditional")


@pytest.fixture(scope="module")
def s3(s3server: S3Server, credentials: tuple[str, str]) -> Any:
    client = s3server.client(credentials)
    client.create_bucket(Bucket="cond")
    return client


def _error(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def test_if_match_writes_only_over_the_named_version(s3: Any) -> None:
    first = s3.put_object(Bucket="cond", Key="state.json", Body=b"v1")["ETag"]
    second = s3.put_object(Bucket="cond", Key="state.json", Body=b"v2", IfMatch=first)["ETag"]
    with pytest.raises(ClientError) as stale:
        s3.put_object(Bucket="cond", Key="state.json", Body=b"v3", IfMatch=first)
    assert _error(stale.value) == (412, "PreconditionFailed")
    got = s3.get_object(Bucket="cond", Key="state.json")
    assert got["Body"].read() == b"v2" and got["ETag"] == second
    with pytest.raises(ClientError) as missing:
        s3.put_object(Bucket="cond", Key="absent.json", Body=b"v1", IfMatch=first)
    assert _error(missing.value) == (404, "NoSuchKey")


def test_if_none_match_with_an_etag_refuses_that_version(s3: Any) -> None:
    current = s3.put_object(Bucket="cond", Key="inm.txt", Body=b"a")["ETag"]
    with pytest.raises(ClientError) as same:
        s3.put_object(Bucket="cond", Key="inm.txt", Body=b"b", IfNoneMatch=current)
    assert _error(same.value) == (412, "PreconditionFailed")
    s3.put_object(Bucket="cond", Key="inm.txt", Body=b"c", IfNoneMatch='"0123456789abcdef"')
    with pytest.raises(ClientError) as exists:
        s3.put_object(Bucket="cond", Key="inm.txt", Body=b"d", IfNoneMatch="*")
    assert _error(exists.value) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket="cond", Key="inm.txt")["Body"].read() == b"c"


def _race(clients: list[Any], key: str, base: str) -> tuple[list[str], list[bytes]]:
    """Every client PUTs its own body over ``base`` with If-Match at the same moment."""
    bodies = [os.urandom(2 * MiB) for _ in clients]
    start = threading.Barrier(len(clients))
    outcomes = [""] * len(clients)

    def write(index: int) -> None:
        start.wait()
        try:
            clients[index].put_object(Bucket="cond", Key=key, Body=bodies[index], IfMatch=base)
            outcomes[index] = "written"
        except ClientError as exc:
            outcomes[index] = str(_error(exc))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, bodies


def test_two_writers_racing_with_if_match_lose_exactly_one_update(
    s3server: S3Server, credentials: tuple[str, str]
) -> None:
    clients = [s3server.client(credentials) for _ in range(2)]
    for round_ in range(8):
        key = f"race-{round_}"
        base = clients[0].put_object(Bucket="cond", Key=key, Body=b"base")["ETag"]
        outcomes, bodies = _race(clients, key, base)
        assert sorted(outcomes) == ["(412, 'PreconditionFailed')", "written"], outcomes
        stored = clients[0].get_object(Bucket="cond", Key=key)["Body"].read()
        assert stored == bodies[outcomes.index("written")]


def test_multipart_completion_honours_if_none_match(s3: Any) -> None:
    s3.put_object(Bucket="cond", Key="mp.bin", Body=b"taken")
    upload = s3.create_multipart_upload(Bucket="cond", Key="mp.bin")["UploadId"]
    etag = s3.upload_part(Bucket="cond", Key="mp.bin", UploadId=upload, PartNumber=1, Body=b"part")[
        "ETag"
    ]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    with pytest.raises(ClientError) as exists:
        s3.complete_multipart_upload(
            Bucket="cond", Key="mp.bin", UploadId=upload, MultipartUpload=parts, IfNoneMatch="*"
        )
    assert _error(exists.value) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket="cond", Key="mp.bin")["Body"].read() == b"taken"


def test_conditional_deletes_keep_another_version(s3: Any) -> None:
    etag = s3.put_object(Bucket="cond", Key="del.txt", Body=b"keep me")["ETag"]
    with pytest.raises(ClientError) as stale:
        s3.delete_object(Bucket="cond", Key="del.txt", IfMatch='"0123456789abcdef"')
    assert _error(stale.value) == (412, "PreconditionFailed")
    answer = s3.delete_objects(
        Bucket="cond", Delete={"Objects": [{"Key": "del.txt", "ETag": '"0123456789abcdef"'}]}
    )
    assert answer["Errors"][0]["Code"] == "PreconditionFailed" and "Deleted" not in answer
    assert s3.get_object(Bucket="cond", Key="del.txt")["Body"].read() == b"keep me"
    s3.delete_object(Bucket="cond", Key="del.txt", IfMatch=etag)
    with pytest.raises(ClientError) as gone:
        s3.head_object(Bucket="cond", Key="del.txt")
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # Nothing left to delete is no precondition failure.
    absent = s3.delete_object(Bucket="cond", Key="del.txt", IfMatch=etag)
    assert absent["ResponseMetadata"]["HTTPStatusCode"] == 204
