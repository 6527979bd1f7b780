"""Catalog references in specs, and S3 accesses mapped to entries' prefixes."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

from aifactory.catalog import Reference, S3Lineage
from aifactory.store import Store


def test_a_reference_parses_and_prints_back() -> None:
    assert Reference.parse("catalog:physics/chat-ft@3") == Reference("physics", "chat-ft", 3)
    assert Reference.parse("catalog:physics/wiki").version is None
    assert str(Reference("physics", "wiki", 2)) == "catalog:physics/wiki@2"
    for wrong in ("physics/wiki", "catalog:physics", "catalog:physics/wiki@0", "catalog:../x"):
        with pytest.raises(ValueError, match="catalog:TENANT/NAME"):
            Reference.parse(wrong)


@dataclass(frozen=True)
class _Caller:
    key_id: int | None
    tenant_id: int


def test_s3_accesses_under_a_prefix_become_one_edge_per_key_and_relation(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    key = store.add_key(tenant, "a" * 64, "aif-a", "member", "")
    where = {"kind": "dataset", "bucket": "data", "prefix": "raw"}
    store.save_catalog_entry(tenant, "raw", where, "private", [], {"title": "R"}, [], "r")
    lineage = S3Lineage(store)

    async def scenario() -> None:
        await lineage.flush()  # loads the prefixes
        caller = _Caller(key, tenant)
        for _ in range(3):
            lineage.seen(caller, "data", "raw/part-0.jsonl", write=False)
        lineage.seen(caller, "data", "raw/part-1.jsonl", write=True)
        lineage.seen(caller, "data", "rawer/x.jsonl", write=False)  # not under raw/
        lineage.seen(caller, "other", "raw/x.jsonl", write=False)
        lineage.seen(_Caller(None, tenant), "data", "raw/x.jsonl", write=False)
        await lineage.flush()

    asyncio.run(scenario())
    edges = sorted(
        (r.edge.relation, r.edge.activity_id, r.edge.via, r.edge.version)
        for r in store.lineage_of(tenant, "raw")
    )
    assert edges == [("generated", str(key), "s3", 1), ("used", str(key), "s3", 1)]


def test_a_slow_flush_never_leaves_older_prefixes_than_a_newer_one(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    key = store.add_key(tenant, "a" * 64, "aif-a", "member", "")
    answered = threading.Event()
    first = True

    class SlowFirstRead:
        """The store, whose first prefix read answers from before the entry, and late."""

        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def catalog_prefixes(self) -> list[tuple[str, str, int, str, int]]:
            nonlocal first
            if not first:
                return store.catalog_prefixes()
            first = False
            before = store.catalog_prefixes()
            answered.set()
            time.sleep(0.3)
            return before

    lineage = S3Lineage(SlowFirstRead())  # type: ignore[arg-type]

    async def scenario() -> None:
        background = asyncio.create_task(lineage.flush())
        await asyncio.to_thread(answered.wait)
        where = {"kind": "dataset", "bucket": "data", "prefix": "raw"}
        store.save_catalog_entry(tenant, "raw", where, "private", [], {"title": "R"}, [], "r")
        await lineage.flush()  # what a registration awaits
        await background
        lineage.seen(_Caller(key, tenant), "data", "raw/x.jsonl", write=False)
        await lineage.flush()

    asyncio.run(scenario())
    assert [r.edge.relation for r in store.lineage_of(tenant, "raw")] == ["used"]
