"""The catalog's store queries (entries, versions, lineage) on a real PostgreSQL, in a
schema of their own."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from aifactory.store import Store
from catalog_store_cases import (
    a_jobs_edge_carries_its_row_and_the_ledger_row_that_charged_it,
    concurrent_first_registrations_make_one_version,
    lineage_edges_are_a_set_and_outputs_settle_to_the_version_registered,
    search_matches_words_by_prefix_in_the_full_text_index,
    versions_are_immutable_and_new_only_on_change,
)

from .server import REPO

SCRIPT = REPO / "deploy" / "postgres-dev.sh"


@pytest.fixture
def store() -> Iterator[Store]:
    status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True)
    if status.returncode != 0:
        pytest.skip("no PostgreSQL: run `deploy/postgres-dev.sh up` first")
    url = subprocess.run(
        ["bash", str(SCRIPT), "url"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # Its own schema: other tests (and other sessions) use the database at the same time.
    schema = f"catalog_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    fresh = Store(f"{url}?options=-csearch_path%3D{schema}")
    try:
        fresh.create_schema()
        yield fresh
    finally:
        fresh.close()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_versions_are_immutable_and_new_only_on_change(store: Store) -> None:
    versions_are_immutable_and_new_only_on_change(store)


def test_search_matches_words_by_prefix_in_the_full_text_index(store: Store) -> None:
    search_matches_words_by_prefix_in_the_full_text_index(store)


def test_concurrent_first_registrations_make_one_version(store: Store) -> None:
    concurrent_first_registrations_make_one_version(store)


def test_lineage_edges_are_a_set_and_outputs_settle(store: Store) -> None:
    lineage_edges_are_a_set_and_outputs_settle_to_the_version_registered(store)


def test_a_jobs_edge_carries_its_ledger_row(store: Store) -> None:
    a_jobs_edge_carries_its_row_and_the_ledger_row_that_charged_it(store)
