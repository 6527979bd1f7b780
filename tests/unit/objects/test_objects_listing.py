from pathlib import Path

import pytest

from aifactory.objects.posix.listing import list_page
from aifactory.objects.posix.metadata import ObjectMeta
from aifactory.objects.posix.storage import FileStore

KEYS = ["foo+1/x", "foo/a", "foo/b/c", "foo/b/d", "foo.txt", "foo0", "zeta", "ä/1", "a b/c"]


@pytest.fixture
def files(tmp_path: Path) -> FileStore:
    store = FileStore(str(tmp_path / "root"))
    store.create_bucket("bkt")
    for key in KEYS:
        writer = store.writer("bkt", key)
        writer.write(key.encode())
        writer.publish(ObjectMeta('"e"', 0, 0))
    return store


def _all_keys(files: FileStore, **kwargs: object) -> tuple[list[str], list[str]]:
    keys: list[str] = []
    prefixes: list[str] = []
    after, skip = "", ""
    while True:
        page = list_page(files, "bkt", after=after, skip_prefix=skip, **kwargs)  # type: ignore[arg-type]
        keys += [o.key for o in page.objects]
        prefixes += page.prefixes
        if not page.truncated:
            return keys, prefixes
        after, skip = page.last, page.last if page.last_is_prefix else ""


def test_keys_come_in_utf8_byte_order_across_directories(files: FileStore) -> None:
    keys, prefixes = _all_keys(files)
    assert keys == sorted(KEYS, key=lambda k: k.encode())
    assert keys.index("foo+1/x") < keys.index("foo.txt") < keys.index("foo/a") < keys.index("foo0")
    assert prefixes == []


@pytest.mark.parametrize("max_keys", [1, 2, 3, 1000])
def test_pages_join_up_whatever_the_page_size(files: FileStore, max_keys: int) -> None:
    assert _all_keys(files, max_keys=max_keys)[0] == sorted(KEYS, key=lambda k: k.encode())
    keys, prefixes = _all_keys(files, delimiter="/", max_keys=max_keys)
    assert keys == ["foo.txt", "foo0", "zeta"]
    assert prefixes == ["a b/", "foo+1/", "foo/", "ä/"]


def test_prefix_and_delimiter(files: FileStore) -> None:
    assert _all_keys(files, prefix="foo/", delimiter="/") == (["foo/a"], ["foo/b/"])
    assert _all_keys(files, prefix="foo", delimiter="/") == (
        ["foo.txt", "foo0"],
        ["foo+1/", "foo/"],
    )
    assert _all_keys(files, prefix="foo/b") == (["foo/b/c", "foo/b/d"], [])
    assert _all_keys(files, prefix="../") == ([], [])


def test_start_after_skips_whole_subtrees(files: FileStore) -> None:
    page = list_page(files, "bkt", after="foo/b/c")
    assert [o.key for o in page.objects][:2] == ["foo/b/d", "foo0"]


def test_other_delimiters_group_too(files: FileStore) -> None:
    keys, prefixes = _all_keys(files, delimiter="b")
    assert "foo/b" in prefixes and "a b" in prefixes
    assert "foo/a" in keys


def test_directory_markers_and_empty_directories(files: FileStore, tmp_path: Path) -> None:
    files.make_directory("bkt", "empty/", ObjectMeta('"d41d8cd98f00b204e9800998ecf8427e"', 0, 0))
    (tmp_path / "root" / "bkt" / "posix-empty").mkdir()
    keys, prefixes = _all_keys(files, delimiter="/")
    assert "empty/" in prefixes and "posix-empty/" not in prefixes
    keys, _ = _all_keys(files, prefix="empty/", delimiter="/")
    assert keys == ["empty/"]
    assert "empty/" in _all_keys(files)[0]
