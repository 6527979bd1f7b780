"""The catalog in-process over a real object store: races and caches.

A delete racing a registration of the same bytes never unlinks the file the
new version lists; a version's partitions are split once per n.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from aifactory.catalog import Catalog, Partition, service
from aifactory.catalog.partitions import split
from aifactory.config import Settings
from aifactory.objects import ObjectsService
from aifactory.store import Store
from aifactory.tenancy import KeyAuthenticator, Principal, issue_key

BYTES = b'{"id": 1}\n{"id": 2}\n'


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
        self.store.create_schema()
        self.objects = ObjectsService(Settings(data_dir=tmp_path), self.store)
        self.objects.prepare()
        self.catalog = Catalog(self.store, self.objects)
        secret = issue_key(self.store, "lab", "member").secret
        principal = KeyAuthenticator(self.store).authenticate_blocking(secret)
        assert principal is not None
        self.lab: Principal = principal

    async def bucket_with(self, *prefixes: str, name: str = "x.jsonl", data: bytes = BYTES) -> None:
        assert self.objects.registry is not None and self.objects.files is not None
        await self.objects.registry.create_for(self.lab.tenant_id, "data")
        for prefix in prefixes:
            folder = Path(self.objects.files.bucket_dir("data")) / prefix
            folder.mkdir()
            (folder / name).write_bytes(data)  # the same bytes, separate inodes

    async def register(self, prefix: str) -> Any:
        document = {"bucket": "data", "prefix": prefix, "title": prefix, "license": "CC0-1.0"}
        return await self.catalog.register(self.lab, document)


def test_a_delete_waits_for_a_registration_that_shares_its_kept_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path)
    saving, go_on = threading.Event(), threading.Event()
    save = world.store.save_catalog_entry

    def save_after_the_delete(*arguments: Any) -> int:
        saving.set()
        go_on.wait(10)
        return save(*arguments)

    async def scenario() -> dict[str, Any]:
        await world.bucket_with("first", "second")
        await world.register("first")
        monkeypatch.setattr(world.store, "save_catalog_entry", save_after_the_delete)
        # "second" keeps its file: the bytes are kept already (first's inode), so it links nothing.
        registering = asyncio.create_task(world.register("second"))
        await asyncio.to_thread(saving.wait, 10)
        deleting = asyncio.create_task(world.catalog.delete(world.lab, "lab", "first"))
        await asyncio.sleep(0.5)  # a delete that does not wait has unlinked the file by now
        go_on.set()
        await registering
        return await deleting

    deleted = asyncio.run(scenario())
    assert deleted["freed_bytes"] == 0, "second's version still lists the bytes"
    second = asyncio.run(world.catalog.view(world.lab, "lab", "second"))
    kept = asyncio.run(world.catalog.file(second, "x.jsonl"))
    assert kept.read_bytes() == BYTES


def test_a_versions_partitions_are_split_once_per_n(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path)
    rows = b"id,text\n" + b"".join(b'%d,"line\nbreak"\n' % i for i in range(100))
    splits: list[int] = []

    def counted(path: str, n: int, kind: str = "") -> list[Partition]:
        splits.append(n)
        return split(path, n, kind)

    monkeypatch.setattr(service, "split", counted)

    async def scenario() -> list[list[Partition]]:
        await world.bucket_with("table", name="t.csv", data=rows)
        view = await world.register("table")
        return [await world.catalog.partitions(view, n) for n in (4, 4, 2, 4)]

    first, again, two, last = asyncio.run(scenario())
    assert splits == [4, 2], "one split for each n asked"
    assert first == again == last and len(first) == 4 and len(two) == 2
