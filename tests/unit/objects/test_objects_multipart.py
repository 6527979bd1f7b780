"""Multipart staging: equal parts go to their slots and complete without a copy; others copy."""

import hashlib
import os
import stat
from pathlib import Path

import pytest

from aifactory.objects import S3Error
from aifactory.objects.posix.multipart import Multipart, Upload
from aifactory.objects.posix.storage import FileStore


@pytest.fixture
def multipart(tmp_path: Path) -> Multipart:
    files = FileStore(str(tmp_path / "root"))
    files.create_bucket("bkt")
    return Multipart(files, min_part_bytes=1)


def _start(multipart: Multipart) -> str:
    return multipart.create("bkt", Upload("", "obj", 0.0, "text/plain", {}, {}, ""))


def _part(multipart: Multipart, upload_id: str, number: int, data: bytes) -> tuple[int, str, str]:
    writer = multipart.part_writer("bkt", upload_id, number, len(data))
    writer.write(data)
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    writer.publish(etag, "")
    return number, etag, ""


def _staged(multipart: Multipart, upload_id: str, name: str) -> Path:
    return Path(multipart._dir("bkt", upload_id)) / name


def _object(multipart: Multipart) -> Path:
    return Path(multipart._files.bucket_dir("bkt")) / "obj"


def test_equal_parts_are_written_in_place_and_the_object_is_that_file(
    multipart: Multipart,
) -> None:
    upload_id = _start(multipart)
    listed = [_part(multipart, upload_id, n, d) for n, d in ((2, b"bbbb"), (1, b"aaaa"))]
    listed.append(_part(multipart, upload_id, 3, b"cc"))
    inode = _staged(multipart, upload_id, "data").stat().st_ino
    assert {p.file for p in multipart.parts("bkt", upload_id)} == {"data"}

    meta = multipart.complete("bkt", multipart.upload("bkt", "obj", upload_id), sorted(listed))

    published = _object(multipart)
    assert published.read_bytes() == b"aaaabbbbcc"
    assert published.stat().st_ino == inode  # renamed, not copied
    assert meta.size == 10 and meta.etag.endswith('-3"')
    assert stat.S_IMODE(published.stat().st_mode) == 0o666 & ~multipart._files.umask
    assert not Path(multipart._dir("bkt", upload_id)).exists()


def test_a_retried_part_gets_a_file_of_its_own_and_wins(multipart: Multipart) -> None:
    upload_id = _start(multipart)
    first = _part(multipart, upload_id, 1, b"aaaa")
    retried = _part(multipart, upload_id, 1, b"AAAA")
    assert first[1] != retried[1]
    assert multipart.parts("bkt", upload_id)[0].file != "data"
    tail = _part(multipart, upload_id, 2, b"b")

    multipart.complete("bkt", multipart.upload("bkt", "obj", upload_id), [retried, tail])

    assert _object(multipart).read_bytes() == b"AAAAb"


def test_parts_that_do_not_tile_are_copied(multipart: Multipart) -> None:
    upload_id = _start(multipart)
    tail = _part(multipart, upload_id, 2, b"bb")  # claims a 2-byte stride
    head = _part(multipart, upload_id, 1, b"aaaa")  # too long for it: a file of its own

    multipart.complete("bkt", multipart.upload("bkt", "obj", upload_id), [head, tail])

    assert _object(multipart).read_bytes() == b"aaaabb"


def test_a_slot_still_being_written_is_never_published(multipart: Multipart) -> None:
    upload_id = _start(multipart)
    listed = [_part(multipart, upload_id, n, b"xxxx") for n in (1, 2)]
    late = multipart.part_writer("bkt", upload_id, 3, 4)
    late.write(b"zz")
    inode = _staged(multipart, upload_id, "data").stat().st_ino

    multipart.complete("bkt", multipart.upload("bkt", "obj", upload_id), listed)
    late.write(b"zz")

    published = _object(multipart)
    assert published.read_bytes() == b"xxxxxxxx"
    assert published.stat().st_ino != inode


def test_a_part_longer_than_announced_is_refused(multipart: Multipart) -> None:
    upload_id = _start(multipart)
    writer = multipart.part_writer("bkt", upload_id, 1, 4)
    writer.write(b"aaa")
    with pytest.raises(S3Error) as caught:
        writer.write(b"aa")
    assert caught.value.code == "IncompleteBody"
    writer.abort()
    assert os.path.exists(_staged(multipart, upload_id, "data"))  # shared: only its slot is void


def test_part_ranges_follow_the_completed_parts(multipart: Multipart) -> None:
    upload_id = _start(multipart)
    sizes = [4, 4, 3, 3, 1]
    listed = [_part(multipart, upload_id, n, b"x" * size) for n, size in enumerate(sizes, 1)]
    meta = multipart.complete("bkt", multipart.upload("bkt", "obj", upload_id), listed)
    assert meta.part_runs == [[4, 2], [3, 2], [1, 1]]
    assert [meta.part_range(n) for n in range(1, 6)] == [
        (0, 3),
        (4, 7),
        (8, 10),
        (11, 13),
        (14, 14),
    ]
    with pytest.raises(S3Error) as beyond:
        meta.part_range(6)
    assert beyond.value.code == "InvalidPartNumber" and beyond.value.status_code == 416


def test_too_many_part_sizes_keep_no_table(multipart: Multipart) -> None:
    upload_id = _start(multipart)
    listed = [_part(multipart, upload_id, n, b"x" * (100 - n)) for n in range(1, 67)]
    meta = multipart.complete("bkt", multipart.upload("bkt", "obj", upload_id), listed)
    assert meta.parts == 66 and meta.part_runs == []
    with pytest.raises(S3Error) as refused:
        meta.part_range(1)
    assert refused.value.code == "NotImplemented"
