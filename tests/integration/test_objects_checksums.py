"""Flexible checksums beyond CRC32: CRC64NVME (the newest SDKs' default), FULL_OBJECT and
COMPOSITE multipart checksums, whole-object values checked at completion; boto3 and pyarrow."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from awscrt import checksums as crt
from botocore.exceptions import ClientError
from pyarrow import fs

from .objects_server import S3Server, start_objects_server

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(tmp_path_factory.mktemp("objects-checksums"))
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def credentials(s3server: S3Server) -> tuple[str, str]:
    return s3server.issue("checksums")


@pytest.fixture(scope="module")
def s3(s3server: S3Server, credentials: tuple[str, str]) -> Any:
    client = s3server.client(credentials)
    client.create_bucket(Bucket="sums")
    return client


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _crc64(data: bytes) -> str:
    return _b64(crt.crc64nvme(data).to_bytes(8, "big"))


def _error(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def test_crc64nvme_put_is_checked_and_returned(s3: Any) -> None:
    body = os.urandom(100_000)
    put = s3.put_object(Bucket="sums", Key="a.bin", Body=body, ChecksumAlgorithm="CRC64NVME")
    assert put["ChecksumCRC64NVME"] == _crc64(body)
    head = s3.head_object(Bucket="sums", Key="a.bin", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == _crc64(body) and head["ChecksumType"] == "FULL_OBJECT"
    wrong = _crc64(b"something else")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket="sums", Key="a.bin", Body=body, ChecksumCRC64NVME=wrong)
    assert _error(refused.value) == (400, "BadDigest")


def _upload_parts(s3: Any, key: str, parts: list[bytes], **create: str) -> tuple[str, list[Any]]:
    algorithm = create["ChecksumAlgorithm"]
    upload = s3.create_multipart_upload(Bucket="sums", Key=key, **create)["UploadId"]
    done = []
    for number, data in enumerate(parts, start=1):
        answer = s3.upload_part(
            Bucket="sums",
            Key=key,
            UploadId=upload,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm=algorithm,
        )
        name = "Checksum" + algorithm
        done.append({"PartNumber": number, "ETag": answer["ETag"], name: answer[name]})
    return upload, done


@pytest.mark.parametrize("algorithm", ["CRC64NVME", "CRC32", "CRC32C"])
def test_full_object_multipart_checksum_is_the_whole_objects(s3: Any, algorithm: str) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(MiB + 7)]
    key = f"full-{algorithm}"
    create = {"ChecksumAlgorithm": algorithm, "ChecksumType": "FULL_OBJECT"}
    upload, done = _upload_parts(s3, key, parts, **create)
    whole = b"".join(parts)
    expected = {
        "CRC64NVME": _crc64(whole),
        "CRC32": _b64(crt.crc32(whole).to_bytes(4, "big")),
        "CRC32C": _b64(crt.crc32c(whole).to_bytes(4, "big")),
    }[algorithm]
    name = "Checksum" + algorithm
    with pytest.raises(ClientError) as wrong:
        s3.complete_multipart_upload(
            Bucket="sums", Key=key, UploadId=upload, MultipartUpload={"Parts": done},
            **{name: _crc64(b"x") if algorithm == "CRC64NVME" else "AAAAAA=="},
        )  # fmt: skip
    assert _error(wrong.value) == (400, "BadDigest")
    completed = s3.complete_multipart_upload(
        Bucket="sums", Key=key, UploadId=upload, MultipartUpload={"Parts": done}, **{name: expected}
    )
    assert completed[name] == expected and completed["ChecksumType"] == "FULL_OBJECT"
    head = s3.head_object(Bucket="sums", Key=key, ChecksumMode="ENABLED")
    assert head[name] == expected and head["ChecksumType"] == "FULL_OBJECT"


def test_composite_sha256_refuses_a_wrong_whole_object_value(s3: Any) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(1000)]
    upload, done = _upload_parts(s3, "composite", parts, ChecksumAlgorithm="SHA256")
    joined = b"".join(hashlib.sha256(part).digest() for part in parts)
    expected = f"{_b64(hashlib.sha256(joined).digest())}-2"
    wrong = f"{_b64(hashlib.sha256(b'other').digest())}-2"
    with pytest.raises(ClientError) as refused:
        s3.complete_multipart_upload(
            Bucket="sums", Key="composite", UploadId=upload, MultipartUpload={"Parts": done},
            ChecksumSHA256=wrong,
        )  # fmt: skip
    assert _error(refused.value) == (400, "BadDigest")
    completed = s3.complete_multipart_upload(
        Bucket="sums", Key="composite", UploadId=upload, MultipartUpload={"Parts": done},
        ChecksumSHA256=expected,
    )  # fmt: skip
    assert completed["ChecksumSHA256"] == expected and completed["ChecksumType"] == "COMPOSITE"


def test_types_an_algorithm_cannot_have_are_refused(s3: Any) -> None:
    for algorithm, kind in (("CRC64NVME", "COMPOSITE"), ("SHA256", "FULL_OBJECT")):
        with pytest.raises(ClientError) as refused:
            s3.create_multipart_upload(
                Bucket="sums", Key="x", ChecksumAlgorithm=algorithm, ChecksumType=kind
            )
        assert _error(refused.value) == (400, "InvalidRequest")


def test_a_part_with_another_algorithm_than_its_upload_is_refused(s3: Any) -> None:
    create = {"ChecksumAlgorithm": "CRC64NVME"}
    upload = s3.create_multipart_upload(Bucket="sums", Key="mixed", **create)["UploadId"]
    with pytest.raises(ClientError) as refused:
        s3.upload_part(
            Bucket="sums", Key="mixed", UploadId=upload, PartNumber=1, Body=b"x",
            ChecksumAlgorithm="CRC32",
        )  # fmt: skip
    assert _error(refused.value) == (400, "InvalidRequest")


def test_pyarrow_writes_parquet_and_multipart_streams(
    s3server: S3Server, credentials: tuple[str, str], s3: Any
) -> None:
    # pyarrow's S3FileSystem (the AWS C++ SDK) sends CRC64NVME on every write.
    arrow = fs.S3FileSystem(
        access_key=credentials[0], secret_key=credentials[1], region="us-east-1",
        endpoint_override=s3server.url, scheme="http",
    )  # fmt: skip
    table = pa.table({"step": list(range(1000)), "loss": [1 / (i + 1) for i in range(1000)]})
    pq.write_table(table, "sums/metrics.parquet", filesystem=arrow)
    assert pq.read_table("sums/metrics.parquet", filesystem=arrow).equals(table)
    chunks = [os.urandom(6 * MiB) for _ in range(2)]
    with arrow.open_output_stream("sums/stream.bin") as out:
        for chunk in chunks:
            out.write(chunk)
    assert s3.get_object(Bucket="sums", Key="stream.bin")["Body"].read() == b"".join(chunks)


def test_object_attributes_name_size_etag_checksum_and_parts(s3: Any) -> None:
    body = os.urandom(3000)
    put = s3.put_object(Bucket="sums", Key="attrs.bin", Body=body, ChecksumAlgorithm="SHA256")
    wanted = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
    got = s3.get_object_attributes(Bucket="sums", Key="attrs.bin", ObjectAttributes=wanted)
    assert got["ETag"] == put["ETag"].strip('"') and got["ObjectSize"] == 3000
    assert got["Checksum"]["ChecksumSHA256"] == _b64(hashlib.sha256(body).digest())
    assert got["StorageClass"] == "STANDARD" and "ObjectParts" not in got
    parts = [os.urandom(5 * MiB), os.urandom(10)]
    upload, done = _upload_parts(s3, "attrs-mp", parts, ChecksumAlgorithm="CRC32C")
    s3.complete_multipart_upload(
        Bucket="sums", Key="attrs-mp", UploadId=upload, MultipartUpload={"Parts": done}
    )
    got = s3.get_object_attributes(Bucket="sums", Key="attrs-mp", ObjectAttributes=wanted)
    assert got["ObjectParts"]["TotalPartsCount"] == 2 and got["ObjectSize"] == 5 * MiB + 10
    assert got["Checksum"]["ChecksumType"] == "COMPOSITE"
    with pytest.raises(ClientError) as refused:
        s3.get_object_attributes(Bucket="sums", Key="attrs.bin", ObjectAttributes=["Colour"])
    assert _error(refused.value) == (400, "InvalidArgument")
