"""Versions kept beside the tree, with xattrs and with sidecar metadata."""

import os
from pathlib import Path

import pytest

from aifactory.objects import S3Error
from aifactory.objects.posix.metadata import ObjectMeta
from aifactory.objects.posix.storage import FileStore
from aifactory.objects.posix.versions import ENABLED, NULL, SUSPENDED


@pytest.fixture(params=[True, False], ids=["xattr", "sidecar"])
def files(tmp_path: Path, request: pytest.FixtureRequest) -> FileStore:
    store = FileStore(str(tmp_path / "root"))
    store.meta.use_xattr = request.param
    store.create_bucket("bkt")
    return store


def _put(files: FileStore, key: str, data: bytes) -> str:
    writer = files.writer("bkt", key)
    writer.write(data)
    return writer.publish(ObjectMeta(f'"{data.decode()}"', 0, 0)).version_id


def _read(files: FileStore, key: str, version: str) -> bytes:
    fd, info = files.versions.open("bkt", key, version)
    try:
        assert info.meta.etag == f'"{os.pread(fd, 100, 0).decode()}"'
        return os.pread(fd, 100, 0)
    finally:
        os.close(fd)


def test_versions_stay_out_of_the_tree_and_come_back_in_order(
    files: FileStore, tmp_path: Path
) -> None:
    before = _put(files, "k", b"v0")
    assert before == ""
    files.versions.set_status("bkt", ENABLED)
    ids = [_put(files, "k", f"v{n}".encode()) for n in (1, 2)]
    assert os.listdir(tmp_path / "root" / "bkt") == ["k"]
    assert [_read(files, "k", v) for v in (NULL, *ids)] == [b"v0", b"v1", b"v2"]
    assert [v.version_id for v in files.versions.kept_of("bkt", "k")] == [ids[0], NULL]

    marker = files.versions.remove("bkt", "k")
    assert marker.marker and not (tmp_path / "root" / "bkt" / "k").exists()
    with pytest.raises(S3Error) as refused:
        files.versions.open("bkt", "k", marker.version_id)
    assert refused.value.code == "MethodNotAllowed"
    files.versions.remove("bkt", "k", marker.version_id)
    assert files.head("bkt", "k").meta.version_id == ids[1]
    files.versions.remove("bkt", "k", ids[1])
    assert (tmp_path / "root" / "bkt" / "k").read_bytes() == b"v1"
    assert files.head("bkt", "k").meta.etag == '"v1"'
    with pytest.raises(S3Error):
        files.delete_bucket("bkt")  # versions remain
    for version in (ids[0], NULL):
        files.versions.remove("bkt", "k", version)
    files.delete_bucket("bkt")


def test_a_suspended_bucket_keeps_one_null_version(files: FileStore) -> None:
    files.versions.set_status("bkt", ENABLED)
    kept = _put(files, "k", b"on")
    files.versions.set_status("bkt", SUSPENDED)
    assert _put(files, "k", b"off1") == "" and _put(files, "k", b"off2") == ""
    assert [v.version_id for v in files.versions.kept_of("bkt", "k")] == [kept]
    marker = files.versions.remove("bkt", "k")
    assert marker.version_id == NULL
    assert [v.version_id for v in files.versions.kept_of("bkt", "k")] == [NULL, kept]
