"""The catalog never follows a symbolic link a tenant planted in its bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifactory.catalog.files import ContentStore, no_links_on_the_way, scan_prefix


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path, ContentStore]:
    secret = tmp_path / "data-dir" / "admin.key"
    secret.parent.mkdir()
    secret.write_text("the administrator's key\n")
    bucket = tmp_path / "bucket"
    (bucket / "real").mkdir(parents=True)
    (bucket / "real" / "a.jsonl").write_text('{"x": 1}\n')
    return bucket, secret, ContentStore(tmp_path / "kept")


def test_a_prefix_through_a_link_is_not_scanned(tree: tuple[Path, Path, ContentStore]) -> None:
    bucket, secret, content = tree
    (bucket / "evil").symlink_to(secret.parent)
    assert not no_links_on_the_way(bucket / "evil" / "admin.key")
    with pytest.raises(FileNotFoundError):
        scan_prefix(bucket / "evil", content)
    assert not content.root.exists() or not any(content.root.rglob("*"))


def test_a_file_that_is_a_link_is_left_out_and_never_kept(
    tree: tuple[Path, Path, ContentStore],
) -> None:
    bucket, secret, content = tree
    (bucket / "real" / "b.jsonl").symlink_to(secret)
    found = scan_prefix(bucket / "real", content)
    assert [f.path for f in found] == ["a.jsonl"]
    with pytest.raises(FileNotFoundError):  # as if swapped for a link after the walk saw it
        content.keep(bucket / "real" / "b.jsonl")
    kept = [p.read_bytes() for p in content.root.rglob("*") if p.is_file()]
    assert kept == [b'{"x": 1}\n']
