"""`aifactory up` serves S3 on its own port; keys carry S3 pairs; `aifactory buckets`."""

from __future__ import annotations

import configparser
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from .server import Server, free_port, start_server


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("objects-up"), objects_port=str(port))
    yield server, f"http://127.0.0.1:{port}"
    assert server.stop() in (0, -15), server.log_tail()


def _client(endpoint: str, access: str, secret: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )


def test_first_admin_gets_s3_credentials(up: tuple[Server, str]) -> None:
    server, endpoint = up
    path = server.data_dir / "admin-s3-credentials"
    assert path.stat().st_mode & 0o777 == 0o600
    profile = configparser.ConfigParser()
    profile.read(path)
    s3 = _client(
        endpoint,
        profile["default"]["aws_access_key_id"],
        profile["default"]["aws_secret_access_key"],
    )
    s3.create_bucket(Bucket="admin-bucket")
    assert (server.data_dir / "objects" / "admin-bucket").is_dir()


def test_keys_buckets_and_status(up: tuple[Server, str]) -> None:
    server, endpoint = up
    created = server.admin.post("/api/keys", json={"tenant": "physics"}).json()
    assert created["s3_access_key_id"].startswith("AKAF")
    physics = _client(endpoint, created["s3_access_key_id"], created["s3_secret_access_key"])
    server.cli("buckets", "create", "datasets", "--tenant", "physics")
    physics.put_object(Bucket="datasets", Key="train/0.parquet", Body=b"rows")
    assert (
        server.data_dir / "objects" / "datasets" / "train" / "0.parquet"
    ).read_bytes() == b"rows"
    listing = server.cli("buckets", "ls").stdout
    assert "datasets" in listing and "physics" in listing

    chem_out = server.cli("keys", "create", "--tenant", "chemistry").stdout
    lines = [line.strip() for line in chem_out.splitlines()]
    access = next(line for line in lines if line.startswith("AKAF"))
    secret = lines[lines.index(access) + 1]
    chemistry = _client(endpoint, access, secret)
    with pytest.raises(ClientError) as caught:
        chemistry.get_object(Bucket="datasets", Key="train/0.parquet")
    assert caught.value.response["Error"]["Code"] == "AccessDenied"
    server.cli("buckets", "share", "datasets", "--tenant", "chemistry", "--access", "read")
    # The S3 server caches bucket access for up to 5 s.
    deadline = time.monotonic() + 10
    while True:
        try:
            got = chemistry.get_object(Bucket="datasets", Key="train/0.parquet")
            break
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert got["Body"].read() == b"rows"
    with pytest.raises(ClientError) as caught:
        chemistry.put_object(Bucket="datasets", Key="x", Body=b"no")
    assert caught.value.response["Error"]["Code"] == "AccessDenied"

    dashboard = server.admin.get("/api/dashboard/buckets").json()
    assert dashboard["enabled"] is True
    row = next(b for b in dashboard["buckets"] if b["name"] == "datasets")
    assert (row["tenant"], row["objects"], row["bytes"]) == ("physics", 1, 4)

    status = server.admin.get("/api/objects/status").json()
    assert status["listening"] is True and status["endpoint"] == endpoint
    assert status["requests"]["PutObject"] >= 1 and status["errors"]["AccessDenied"] >= 1
    assert status["metadata"] == "xattr" and status["disk_free_bytes"] > 0

    removed = server.cli("buckets", "rm", "datasets", check=False)
    assert removed.returncode != 0 and "not empty" in (removed.stdout + removed.stderr)
    physics.delete_object(Bucket="datasets", Key="train/0.parquet")
    server.cli("buckets", "rm", "datasets")
    assert not (server.data_dir / "objects" / "datasets").exists()
    assert "datasets" not in server.cli("buckets", "ls").stdout

    server.admin.delete(f"/api/keys/{created['id']}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            physics.list_buckets()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "InvalidAccessKeyId"
            break
        time.sleep(0.5)
    else:
        raise AssertionError("a revoked key kept its S3 access")
