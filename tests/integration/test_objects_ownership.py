"""Buckets are their tenant's files: a root control plane hands every object to the tenant's
Unix user, other tenants' jobs cannot read them, and a grant opens them through an ACL."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from aifactory.store import Store
from unix_users import make_traversable

from .server import Server, free_port, start_server

pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="handing files to other users needs a root control plane (CI)"
)

BUCKET = "alice-data"
PART = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("objects-owned"), objects_port=str(port))
    yield server, f"http://127.0.0.1:{port}"
    assert server.stop() in (0, -15), server.log_tail()


def _tenant(server: Server, endpoint: str, name: str, unix_user: str) -> Any:
    """A tenant mapped to ``unix_user``, and an S3 client with its key."""
    created = server.admin.post("/api/keys", json={"tenant": name}).json()
    store = Store(f"sqlite:///{server.data_dir / 'aifactory.db'}")
    try:
        store.update_tenant(name, unix_user=unix_user)
    finally:
        store.close()
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=created["s3_access_key_id"],
        aws_secret_access_key=created["s3_secret_access_key"],
        region_name="us-east-1",
    )


def _cat(user: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", "cat", str(path)], capture_output=True, text=True
    )


def _assert_owned(path: Path, user: str, mode: int) -> None:
    entry = pwd.getpwnam(user)
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
        entry.pw_uid,
        entry.pw_gid,
        mode,
    ), path


def _multipart(s3: Any, key: str) -> None:
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = []
    for number, body in ((1, b"a" * PART), (2, b"tail")):
        done = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=number, Body=body)
        parts.append({"PartNumber": number, "ETag": done["ETag"]})
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )


def _wait_for(check: Any, timeout_s: float = 10) -> None:
    """Poll ``check`` until it holds (the S3 server caches bucket access for 5 s)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_objects_belong_to_the_tenant_and_grants_open_them(up: tuple[Server, str]) -> None:
    server, endpoint = up
    assert shutil.which("setfacl"), "install the `acl` package (scripts/setup.sh)"
    root = server.data_dir / "objects"
    make_traversable(root)  # what a site's data disk is: jobs pass through to their buckets
    alice = _tenant(server, endpoint, "tenant-a", "aif-alice")
    bob = _tenant(server, endpoint, "tenant-b", "aif-bob")

    alice.create_bucket(Bucket=BUCKET)
    alice.put_object(Bucket=BUCKET, Key="plain.txt", Body=b"plain")
    alice.put_object(Bucket=BUCKET, Key="nested/deep/key.txt", Body=b"nested")
    _multipart(alice, "big.bin")
    alice.copy_object(
        Bucket=BUCKET, Key="copy.txt", CopySource={"Bucket": BUCKET, "Key": "plain.txt"}
    )

    bucket = root / BUCKET
    for folder in (bucket, bucket / "nested", bucket / "nested" / "deep"):
        _assert_owned(folder, "aif-alice", 0o2750)
    files = [bucket / name for name in ("plain.txt", "nested/deep/key.txt", "big.bin", "copy.txt")]
    for path in files:
        _assert_owned(path, "aif-alice", 0o640)
    assert (bucket / "big.bin").stat().st_size == PART + 4
    assert [p.name for p in bucket.iterdir() if p.name.startswith(".aifactory")] == []
    assert stat.S_IMODE((root / ".aifactory").stat().st_mode) == 0o700

    assert _cat("aif-alice", bucket / "nested/deep/key.txt").stdout == "nested"
    for path in files:
        denied = _cat("aif-bob", path)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
    with pytest.raises(ClientError) as caught:
        bob.get_object(Bucket=BUCKET, Key="plain.txt")
    assert caught.value.response["Error"]["Code"] == "AccessDenied"

    granted = server.admin.put(
        f"/api/buckets/{BUCKET}/grants", json={"tenant": "tenant-b", "access": "read"}
    )
    assert granted.status_code == 200, granted.text
    alice.put_object(Bucket=BUCKET, Key="nested/after-grant.txt", Body=b"new")
    alice.put_object(Bucket=BUCKET, Key="fresh/dir/after-grant.txt", Body=b"newer")
    _multipart(alice, "nested/after-grant.bin")  # staged elsewhere, renamed in: ACL copied
    _assert_owned(bucket / "fresh" / "dir", "aif-alice", 0o2750)
    _assert_owned(bucket / "nested/after-grant.bin", "aif-alice", 0o640)
    shared = [
        *files,
        bucket / "nested/after-grant.txt",
        bucket / "fresh/dir/after-grant.txt",
        bucket / "nested/after-grant.bin",
    ]
    for path in shared:
        assert _cat("aif-bob", path).returncode == 0, path
    assert _cat("aif-bob", bucket / "fresh/dir/after-grant.txt").stdout == "newer"
    _wait_for(lambda: _readable(bob, "plain.txt"))

    revoked = server.admin.put(
        f"/api/buckets/{BUCKET}/grants", json={"tenant": "tenant-b", "access": None}
    )
    assert revoked.status_code == 200, revoked.text
    for path in shared:
        assert "Permission denied" in _cat("aif-bob", path).stderr, path
    assert _cat("aif-alice", bucket / "fresh/dir/after-grant.txt").stdout == "newer"
    _wait_for(lambda: not _readable(bob, "plain.txt"))


def _readable(s3: Any, key: str) -> bool:
    try:
        s3.get_object(Bucket=BUCKET, Key=key)
    except ClientError:
        return False
    return True


def test_a_symbolic_link_a_job_plants_is_never_followed(up: tuple[Server, str]) -> None:
    server, endpoint = up
    mallory = _tenant(server, endpoint, "tenant-a", "aif-alice")
    mallory.create_bucket(Bucket="planted")
    secret = server.data_dir / "admin.key"
    bucket = server.data_dir / "objects" / "planted"
    subprocess.run(
        ["runuser", "-u", "aif-alice", "--", "ln", "-s", str(secret), str(bucket / "key")],
        check=True,
    )
    subprocess.run(
        ["runuser", "-u", "aif-alice", "--", "ln", "-s", str(server.data_dir), str(bucket / "d")],
        check=True,
    )
    with pytest.raises(ClientError) as caught:
        mallory.get_object(Bucket="planted", Key="key")
    assert caught.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as caught:
        mallory.get_object(Bucket="planted", Key="d/admin.key")
    assert caught.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        mallory.put_object(Bucket="planted", Key="d/planted.txt", Body=b"x")
    assert not (server.data_dir / "planted.txt").exists()
