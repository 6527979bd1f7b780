import asyncio
import os
import stat
from pathlib import Path

import pytest

from aifactory.errors import ConfigError
from aifactory.identity import Identity, lookup
from aifactory.objects import S3Error
from aifactory.objects.posix.metadata import ObjectMeta
from aifactory.objects.posix.multipart import Multipart, Upload
from aifactory.objects.posix.ownership import Ownership
from aifactory.objects.posix.storage import FileStore
from aifactory.objects.s3.access import BucketRegistry
from aifactory.store import Store

as_root = pytest.mark.skipif(os.getuid() != 0, reason="chown needs root (CI runs as root)")


def test_owners_are_cached_and_an_unmappable_tenant_refuses_writes(tmp_path: Path) -> None:
    asked: list[str] = []

    def owner_of(bucket: str) -> Identity | None:
        asked.append(bucket)
        raise ConfigError("Unix user 'gone' does not exist on this machine.", fix="create it")

    files = FileStore(str(tmp_path / "root"), Ownership(owner_of))
    for _ in range(3):
        with pytest.raises(S3Error) as caught:
            files.create_bucket("bkt")
        assert caught.value.code == "InternalError" and "'gone'" in str(caught.value)
    assert asked == ["bkt"]
    assert not files.bucket_exists("bkt")


@as_root
def test_a_new_object_is_the_owners_before_it_has_its_name(tmp_path: Path) -> None:
    alice = lookup("aif-alice")
    files = FileStore(str(tmp_path / "root"), Ownership(lambda bucket: alice))
    files.create_bucket("bkt")
    writer = files.writer("bkt", "a/b/c.txt")
    writer.write(b"x")
    st = os.fstat(writer.fd)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (alice.uid, alice.gid, 0o640)
    writer.publish(ObjectMeta('"e"', 0, 0))
    for folder in ("bkt", "bkt/a", "bkt/a/b"):
        st = (tmp_path / "root" / folder).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (alice.uid, alice.gid, 0o2750)
    marker = files.make_directory("bkt", "m/", ObjectMeta('"m"', 0, 0))
    assert marker.etag == '"m"' and (tmp_path / "root" / "bkt" / "m").stat().st_uid == alice.uid


@as_root
def test_staged_parts_are_the_owners_in_the_private_staging_directory(tmp_path: Path) -> None:
    alice = lookup("aif-alice")
    files = FileStore(str(tmp_path / "root"), Ownership(lambda bucket: alice))
    files.create_bucket("bkt")
    multipart = Multipart(files, min_part_bytes=1)
    upload_id = multipart.create("bkt", Upload("", "k", 0.0, "", {}, {}, ""))
    part = multipart.part_writer("bkt", upload_id, 1)
    part.write(b"part")
    st = os.fstat(part.fd)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.uid, 0o600)
    part.abort()
    assert stat.S_IMODE(os.stat(files.system_dir).st_mode) == 0o700


@as_root
def test_a_multipart_object_completed_in_place_is_the_owners(tmp_path: Path) -> None:
    alice = lookup("aif-alice")
    files = FileStore(str(tmp_path / "root"), Ownership(lambda bucket: alice))
    files.create_bucket("bkt")
    multipart = Multipart(files, min_part_bytes=1)
    upload = Upload("", "a/k", 0.0, "", {}, {}, "")
    upload_id = multipart.create("bkt", upload)
    part = multipart.part_writer("bkt", upload_id, 1, 4)
    part.write(b"part")
    st = os.fstat(part.fd)
    assert part.file == "data" and (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.uid, 0o600)
    etag = f'"{"0" * 32}"'
    part.publish(etag, "")
    multipart.complete("bkt", upload, [(1, etag, "")])
    for path, mode in (("bkt/a/k", 0o640), ("bkt/a", 0o2750)):
        st = (tmp_path / "root" / path).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (alice.uid, alice.gid, mode)


def test_a_bucket_whose_tenant_has_no_user_is_not_recorded(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()

    def owner_of(bucket: str) -> Identity | None:
        raise ConfigError("Unix user 'gone' does not exist on this machine.")

    files = FileStore(str(tmp_path / "root"), Ownership(owner_of))
    registry = BucketRegistry(store, files, Multipart(files))
    with pytest.raises(S3Error):
        asyncio.run(registry.create_for(store.ensure_tenant("t"), "bkt"))
    assert store.bucket("bkt") is None and not files.bucket_exists("bkt")
    store.close()
