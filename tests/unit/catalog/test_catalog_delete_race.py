"""A delete racing a registration of the same bytes never unlinks the file the new version lists."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from aifactory.catalog import Catalog
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

    async def bucket_with(self, *prefixes: str) -> None:
        assert self.objects.registry is not None and self.objects.files is not None
        await self.objects.registry.create_for(self.lab.tenant_id, "data")
        for prefix in prefixes:
            folder = Path(self.objects.files.bucket_dir("data")) / prefix
            folder.mkdir()
            (folder / "x.jsonl").write_bytes(BYTES)  # the same bytes, separate inodes

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
