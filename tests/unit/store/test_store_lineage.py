"""Lineage edges on SQLite: a set per entry, outputs settled to the version registered,
a job's ledger, and the activity a key's S3 requests belong to."""

from __future__ import annotations

from aifactory.store import Store
from catalog_store_cases import (
    a_jobs_edge_carries_its_row_and_the_ledger_row_that_charged_it,
    lineage_edges_are_a_set_and_outputs_settle_to_the_version_registered,
)


def test_edges_are_a_set_and_outputs_settle_to_the_version_registered(store: Store) -> None:
    lineage_edges_are_a_set_and_outputs_settle_to_the_version_registered(store)


def test_a_jobs_edge_carries_its_row_and_the_ledger_row_that_charged_it(store: Store) -> None:
    a_jobs_edge_carries_its_row_and_the_ledger_row_that_charged_it(store)


def test_a_key_scoped_to_one_service_acts_as_that_service(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    plain = store.add_key(tenant, "a" * 64, "aif-a", "member", "")
    scoped = store.add_key(tenant, "b" * 64, "aif-b", "member", "", services=("chat",))
    assert store.key_activity(plain) == ("key", str(plain))
    assert store.key_activity(scoped) == ("service", "chat")
