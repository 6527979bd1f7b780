"""GET and HEAD by part number (``?partNumber=N``): exactly that part, with boto3 and awscli."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from .objects_server import S3Server, start_objects_server

MiB = 1024 * 1024
# Uneven on purpose: the part table must not assume equal parts.
PART_SIZES = (6 * MiB, 5 * MiB, 5 * MiB, 1 * MiB + 123)


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(tmp_path_factory.mktemp("objects-parts"))
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def credentials(s3server: S3Server) -> tuple[str, str]:
    return s3server.issue("parts")


@pytest.fixture(scope="module")
def s3(s3server: S3Server, credentials: tuple[str, str]) -> Any:
    client = s3server.client(credentials)
    client.create_bucket(Bucket="parts")
    return client


@pytest.fixture(scope="module")
def multipart_object(s3: Any) -> list[bytes]:
    parts = [os.urandom(size) for size in PART_SIZES]
    upload = s3.create_multipart_upload(Bucket="parts", Key="model.bin")["UploadId"]
    done = []
    for number, data in enumerate(parts, start=1):
        etag = s3.upload_part(
            Bucket="parts", Key="model.bin", UploadId=upload, PartNumber=number, Body=data
        )["ETag"]
        done.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(
        Bucket="parts", Key="model.bin", UploadId=upload, MultipartUpload={"Parts": done}
    )
    return parts


def _error(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def test_boto3_reads_each_part_by_number(s3: Any, multipart_object: list[bytes]) -> None:
    etag = s3.head_object(Bucket="parts", Key="model.bin")["ETag"]
    total = sum(PART_SIZES)
    joined, start = b"", 0
    for number, data in enumerate(multipart_object, start=1):
        got = s3.get_object(Bucket="parts", Key="model.bin", PartNumber=number)
        body = got["Body"].read()
        assert body == data
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"] == f"bytes {start}-{start + len(data) - 1}/{total}"
        assert got["PartsCount"] == len(PART_SIZES) and got["ETag"] == etag
        head = s3.head_object(Bucket="parts", Key="model.bin", PartNumber=number)
        assert head["ContentLength"] == len(data) and head["PartsCount"] == len(PART_SIZES)
        joined += body
        start += len(data)
    assert joined == b"".join(multipart_object)
    with pytest.raises(ClientError) as beyond:
        s3.get_object(Bucket="parts", Key="model.bin", PartNumber=len(PART_SIZES) + 1)
    assert _error(beyond.value) == (416, "InvalidPartNumber")


def test_awscli_reads_each_part_by_number(
    s3server: S3Server, credentials: tuple[str, str], multipart_object: list[bytes], tmp_path: Path
) -> None:
    aws = shutil.which("aws", path=str(Path(sys.executable).parent))
    assert aws, "awscli is in the dev extra: pip install -e '.[dev]'"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": credentials[0],
        "AWS_SECRET_ACCESS_KEY": credentials[1],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "absent"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "absent"),
    }
    joined = b""
    for number in range(1, len(PART_SIZES) + 1):
        out = tmp_path / f"part-{number}"
        argv = [aws, "--endpoint-url", s3server.url, "s3api", "get-object", "--bucket", "parts"]
        argv += ["--key", "model.bin", "--part-number", str(number), str(out)]
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["PartsCount"] == len(PART_SIZES)
        joined += out.read_bytes()
    assert joined == b"".join(multipart_object)


def test_a_single_upload_is_its_own_part_one(s3: Any) -> None:
    s3.put_object(Bucket="parts", Key="small.txt", Body=b"one part")
    got = s3.get_object(Bucket="parts", Key="small.txt", PartNumber=1)
    assert got["Body"].read() == b"one part"
    assert got["ContentRange"] == "bytes 0-7/8" and "PartsCount" not in got
    with pytest.raises(ClientError) as beyond:
        s3.head_object(Bucket="parts", Key="small.txt", PartNumber=2)
    assert beyond.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    with pytest.raises(ClientError) as both:
        s3.get_object(Bucket="parts", Key="small.txt", PartNumber=1, Range="bytes=0-1")
    assert _error(both.value) == (400, "InvalidRequest")
