"""A dataset version as the catalog's builders see it, for their unit tests."""

from __future__ import annotations

from datetime import UTC, datetime

from aifactory.catalog import CatalogView
from aifactory.store import CatalogEntryRecord, CatalogVersionRecord

BASE = "http://factory.example"


def version_view(name: str = "wiki", license: str = "CC-BY-4.0", version: int = 2) -> CatalogView:
    entry = CatalogEntryRecord(
        id=1,
        tenant="physics",
        tenant_id=1,
        name=name,
        kind="dataset",
        bucket="data",
        prefix="wiki",
        visibility="public",
        shared_with=(),
        latest=version,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    words = {
        "title": "Wiki sentences",
        "description": "One sentence a line",
        "license": license,
        "keywords": ["nlp", "text"],
        "creator": "Physics lab",
        "format": "jsonl",
        "metadata": {},
    }
    files = [
        {"path": "a/part-0.jsonl", "size": 12, "sha256": "ab" * 32, "kept": True},
        {"path": "part 1.jsonl", "size": 0, "sha256": "cd" * 32, "kept": True},
    ]
    return CatalogView(
        entry, CatalogVersionRecord(version, words, files, datetime(2026, 1, 2, tzinfo=UTC))
    )
