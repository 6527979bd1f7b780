import os
import threading
from pathlib import Path

import pytest

from aifactory.objects import S3Error
from aifactory.objects.posix.metadata import ObjectMeta
from aifactory.objects.posix.storage import FileStore


@pytest.fixture
def files(tmp_path: Path) -> FileStore:
    store = FileStore(str(tmp_path / "root"))
    store.create_bucket("bkt")
    return store


def _put(files: FileStore, key: str, data: bytes, etag: str = '"x"') -> ObjectMeta:
    writer = files.writer("bkt", key)
    writer.write(data)
    return writer.publish(ObjectMeta(etag, 0, 0, "text/plain", {"k": "v"}))


def test_object_is_a_plain_file_with_metadata_in_an_xattr(files: FileStore, tmp_path: Path) -> None:
    _put(files, "dir/sub/file.txt", b"hello")
    path = tmp_path / "root" / "bkt" / "dir" / "sub" / "file.txt"
    assert path.read_bytes() == b"hello"
    info = files.head("bkt", "dir/sub/file.txt")
    assert (info.meta.etag, info.meta.content_type, info.meta.user) == (
        '"x"',
        "text/plain",
        {"k": "v"},
    )
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".aifactory")]


def test_a_file_changed_behind_our_back_loses_its_stale_metadata(
    files: FileStore, tmp_path: Path
) -> None:
    _put(files, "data.csv", b"a,b\n")
    path = tmp_path / "root" / "bkt" / "data.csv"
    with open(path, "ab") as handle:
        handle.write(b"1,2\n")
    info = files.head("bkt", "data.csv")
    assert info.meta.foreign and info.meta.etag.endswith('-1"')
    assert info.meta.content_type == "text/csv" and info.st.st_size == 8


def test_posix_created_file_is_an_object(files: FileStore, tmp_path: Path) -> None:
    (tmp_path / "root" / "bkt" / "job-output").mkdir()
    (tmp_path / "root" / "bkt" / "job-output" / "result.json").write_text("{}")
    info = files.head("bkt", "job-output/result.json")
    assert info.st.st_size == 2 and info.meta.content_type == "application/json"


def test_file_and_directory_clash_are_clean_errors(files: FileStore) -> None:
    _put(files, "a", b"file")
    with pytest.raises(S3Error) as caught:
        _put(files, "a/b", b"child of a file")
    assert caught.value.code == "ObjectParentIsFile"
    _put(files, "d/e", b"x")
    with pytest.raises(S3Error) as caught:
        _put(files, "d", b"file over a directory")
    assert caught.value.code == "ExistingObjectIsDirectory"
    with pytest.raises(S3Error) as caught:
        files.head("bkt", "d")
    assert caught.value.code == "NoSuchKey"


def test_delete_prunes_empty_directories_but_keeps_markers(
    files: FileStore, tmp_path: Path
) -> None:
    files.make_directory("bkt", "keep/", ObjectMeta('"m"', 0, 0))
    _put(files, "keep/x/y/z", b"1")
    files.delete("bkt", "keep/x/y/z")
    assert not (tmp_path / "root" / "bkt" / "keep" / "x").exists()
    assert (tmp_path / "root" / "bkt" / "keep").is_dir()
    files.delete("bkt", "keep/")
    assert not (tmp_path / "root" / "bkt" / "keep").exists()
    files.delete("bkt", "never/existed")


def test_symlinks_cannot_lead_out_of_the_bucket(files: FileStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(tmp_path, tmp_path / "root" / "bkt" / "escape")
    with pytest.raises(S3Error) as caught:
        files.head("bkt", "escape/secret.txt")
    assert caught.value.code == "AccessDenied"
    with pytest.raises(S3Error):
        _put(files, "escape/planted.txt", b"x")
    assert not (tmp_path / "planted.txt").exists()


def test_concurrent_writers_of_one_key_never_mix(files: FileStore, tmp_path: Path) -> None:
    size = 4 * 1024 * 1024
    errors: list[BaseException] = []

    def writer(byte: int) -> None:
        try:
            for _ in range(5):
                w = files.writer("bkt", "contended")
                for _ in range(size // 65536):
                    w.write(bytes([byte]) * 65536)
                w.publish(ObjectMeta(f'"{byte}"', 0, 0))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(b,)) for b in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    seen = set()
    while any(t.is_alive() for t in threads):
        try:
            data = (tmp_path / "root" / "bkt" / "contended").read_bytes()
        except FileNotFoundError:
            continue
        assert len(data) == size and data.count(data[:1]) == size
        seen.add(data[0])
    for t in threads:
        t.join()
    assert errors == []
    final = files.head("bkt", "contended")
    content = (tmp_path / "root" / "bkt" / "contended").read_bytes()
    assert final.meta.etag == f'"{content[0]}"'
    assert [p.name for p in (tmp_path / "root" / "bkt").iterdir()] == ["contended"]


def test_bucket_delete_needs_an_empty_bucket(files: FileStore) -> None:
    _put(files, "x", b"1")
    with pytest.raises(S3Error) as caught:
        files.delete_bucket("bkt")
    assert caught.value.code == "BucketNotEmpty"
    files.delete("bkt", "x")
    files.delete_bucket("bkt")
    assert not files.bucket_exists("bkt")


def test_sidecar_metadata_when_xattrs_are_off(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "root"))
    store.meta.use_xattr = False
    store.create_bucket("bkt")
    _put(store, "a/b", b"data", '"sidecar"')
    assert store.head("bkt", "a/b").meta.etag == '"sidecar"'
    assert os.listxattr(tmp_path / "root" / "bkt" / "a" / "b") == []


def test_an_open_object_keeps_its_own_metadata_when_replaced_alike(
    files: FileStore, tmp_path: Path
) -> None:
    # Two writers' files can share size and (within the clock's granularity)
    # mtime: metadata must come from the file a reader has open, not the path.
    first = _put(files, "same", b"A" * 64, etag='"first"')
    fd, _info = files.open("bkt", "same")
    try:
        path = tmp_path / "root" / "bkt" / "same"
        _put(files, "same", b"B" * 64, etag='"second"')
        os.utime(path, ns=(first.mtime_ns, first.mtime_ns))
        replaced = os.stat(path)
        assert replaced.st_size == 64 and replaced.st_mtime_ns == first.mtime_ns
        mine = files.meta.read("bkt", "same", str(path), os.fstat(fd), fd)
        assert mine is not None and mine.etag == '"first"'
        assert os.pread(fd, 1, 0) == b"A"
    finally:
        os.close(fd)
