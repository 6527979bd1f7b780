"""The control plane reads a tenant's files without following the tenant's links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aifactory.batches.own_files import NotOwnFile, OwnFolder


def test_a_file_in_the_folder_is_read_from_an_offset(tmp_path: Path) -> None:
    (tmp_path / "batches" / "b1").mkdir(parents=True)
    (tmp_path / "batches" / "b1" / "shard-0.jsonl").write_bytes(b"0123456789")
    folder = OwnFolder(tmp_path, os.getuid())
    assert folder.read(Path("batches/b1/shard-0.jsonl"), 4) == (10, b"456789")
    assert folder.read(Path("batches/b1/shard-1.jsonl")) == (0, b"")


def test_links_on_the_way_and_other_owners_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "secret.jsonl"
    secret.parent.mkdir()
    secret.write_bytes(b'{"custom_id": "theirs"}\\n')
    own = tmp_path / "own"
    (own / "batches").mkdir(parents=True)
    (own / "batches" / "b1").symlink_to(secret.parent)
    (own / "batches" / "b2").mkdir()
    (own / "batches" / "b2" / "shard-0.jsonl").symlink_to(secret)
    folder = OwnFolder(own, os.getuid())
    for linked in ("batches/b1/secret.jsonl", "batches/b2/shard-0.jsonl"):
        with pytest.raises(NotOwnFile):
            folder.read(Path(linked))
    (own / "batches" / "b2" / "shard-1.jsonl").write_bytes(b"x")
    with pytest.raises(NotOwnFile):
        OwnFolder(own, os.getuid() + 1).read(Path("batches/b2/shard-1.jsonl"))
