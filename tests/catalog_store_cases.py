"""The catalog's store queries, checked the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from aifactory.store import LineageEdge, Store, utcnow

WHERE = {"kind": "dataset", "bucket": "data", "prefix": "wiki"}
WORDS = {"title": "Wiki 100% clean_text", "license": "MIT", "keywords": ["nlp"]}
FILES = [{"path": "a.jsonl", "size": 3, "sha256": "aa", "kept": True}]


def versions_are_immutable_and_new_only_on_change(store: Store) -> None:
    tenant = store.ensure_tenant("physics")

    def save(words: dict[str, object], files: list[dict[str, object]], visibility: str) -> int:
        return store.save_catalog_entry(
            tenant, "wiki", WHERE, visibility, [], words, files, str(words["title"]).lower()
        )

    assert save(WORDS, FILES, "private") == 1
    assert save(WORDS, FILES, "public") == 1, "the same files and words: no new version"
    changed = [{**FILES[0], "sha256": "bb", "size": 4}]
    assert save(WORDS, changed, "public") == 2
    assert save({**WORDS, "title": "Wiki v3"}, changed, "public") == 3
    entry = store.catalog_entry("physics", "wiki")
    assert entry is not None and (entry.latest, entry.visibility) == (3, "public")
    first = store.catalog_version(entry.id, 1)
    assert first is not None and first.files == FILES
    assert [v.version for v in store.catalog_versions(entry.id)] == [1, 2, 3]
    assert store.catalog_entry("chemistry", "wiki") is None


def search_matches_words_by_prefix_in_the_full_text_index(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    for name, title in (("a", "Collider events, 2024 run"), ("b", "Wiki: clean_text of 2024")):
        words = {**WORDS, "title": title}
        store.save_catalog_entry(tenant, name, WHERE, "private", [], words, FILES, title.lower())
    assert [e.name for e in store.catalog_entries("2024")] == ["a", "b"]
    assert [e.name for e in store.catalog_entries("collid EVENT")] == ["a"]
    assert [e.name for e in store.catalog_entries("clean text")] == ["b"]
    assert [e.name for e in store.catalog_entries("wiki collider")] == []
    # Query syntax is not passed through: quotes, operators and stars are just separators.
    assert [e.name for e in store.catalog_entries('"wiki" * :* & ! (')] == ["b"]
    assert len(store.catalog_entries("")) == 2
    # A new version's words replace the old ones in the index.
    renamed = {**WORDS, "title": "Detector hits"}
    store.save_catalog_entry(tenant, "a", WHERE, "private", [], renamed, FILES, "detector hits")
    assert [e.name for e in store.catalog_entries("collider")] == []
    assert [e.name for e in store.catalog_entries("detector")] == ["a"]


def concurrent_first_registrations_make_one_version(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    barrier = threading.Barrier(6)

    def register(_: int) -> int:
        barrier.wait()
        return store.save_catalog_entry(tenant, "race", WHERE, "private", [], WORDS, FILES, "x")

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(register, range(6))) == [1] * 6
    entry = store.catalog_entry("physics", "race")
    assert entry is not None and [v.version for v in store.catalog_versions(entry.id)] == [1]


def _edge(
    tenant: int, name: str, relation: str, activity: str, version: int | None = 1
) -> LineageEdge:
    return LineageEdge(tenant, name, version, relation, "job", activity, tenant, "spec")


def lineage_edges_are_a_set_and_outputs_settle_to_the_version_registered(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    added = store.add_lineage(
        [_edge(tenant, "raw", "used", "j1"), _edge(tenant, "raw", "used", "j1")]
    )
    assert added == 1
    store.add_lineage([_edge(tenant, "clean", "generated", "j1", version=None)])
    store.settle_generated(tenant, "clean", 3)
    store.settle_generated(tenant, "clean", 4)  # a later version was not made by j1
    (made,) = store.lineage_of(tenant, "clean")
    assert (made.edge.version, made.activity_tenant, made.job) == (3, "physics", None)
    store.delete_lineage(tenant, "clean")
    assert store.lineage_of(tenant, "clean") == []
    assert len(store.lineage_of(tenant, "raw")) == 1


def a_jobs_edge_carries_its_row_and_the_ledger_row_that_charged_it(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    ended = utcnow() - timedelta(minutes=1)
    store.add_job(id="train-1", name="train", spec={}, backend="slurm", tenant_id=tenant)
    store.update_job("train-1", state="completed", ended_at=ended)
    before = {"tenant_id": tenant, "kind": "allocation", "model": "train", "endpoint": "job.slurm"}
    store.add_usage([{**before, "seconds": 9.0, "created_at": ended - timedelta(hours=1)}])
    now = utcnow()
    # Another job of the same name, ended at the same time, charged first: not train-1's row.
    store.add_job(id="train-2", name="train", spec={}, backend="slurm", tenant_id=tenant)
    store.update_job("train-2", state="completed", ended_at=ended)
    store.add_usage([{**before, "seconds": 7.0, "activity": "train-2", "created_at": now}])
    store.add_usage([{**before, "seconds": 5.0, "node_hours": 0.5, "activity": "train-1",
                      "created_at": now}])  # fmt: skip
    store.add_lineage([_edge(tenant, "raw", "used", "train-1")])
    (record,) = store.lineage_of(tenant, "raw")
    assert record.job is not None
    assert (record.job["state"], record.job["name"]) == ("completed", "train")
    (charged,) = record.job["ledger"]
    assert (charged["seconds"], charged["node_hours"]) == (5.0, 0.5)
