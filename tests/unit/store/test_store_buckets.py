"""The store's bucket owners and grants, on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aifactory.store import Store


def test_a_bucket_is_recorded_once_with_its_owner(store: Store) -> None:
    physics = store.ensure_tenant("physics")
    biology = store.ensure_tenant("biology")
    assert store.add_bucket("data", physics)
    assert not store.add_bucket("data", biology), "the first owner keeps it"
    record = store.bucket("data")
    assert record is not None
    assert (record.name, record.tenant_id, record.tenant, record.grants) == (
        "data",
        physics,
        "physics",
        {},
    )
    assert store.bucket("missing") is None


def test_the_creation_time_is_an_aware_utc_time(store: Store) -> None:
    # S3 listings format it as UTC; a naive time could not be compared or converted.
    store.add_bucket("data", store.ensure_tenant("physics"))
    record = store.bucket("data")
    assert record is not None and record.created_at.tzinfo is not None
    assert abs(datetime.now(UTC) - record.created_at) < timedelta(minutes=1)


def test_grants_are_given_changed_and_revoked(store: Store) -> None:
    store.add_bucket("data", store.ensure_tenant("physics"))
    assert store.set_bucket_grant("data", "biology", "read")
    assert store.set_bucket_grant("data", "chemistry", "write")
    assert store.set_bucket_grant("data", "biology", "write")
    record = store.bucket("data")
    assert record is not None and record.grants == {"biology": "write", "chemistry": "write"}
    assert store.set_bucket_grant("data", "chemistry", None)
    assert store.set_bucket_grant("data", "nobody", None), "revoking what was never granted"
    record = store.bucket("data")
    assert record is not None and record.grants == {"biology": "write"}
    assert not store.set_bucket_grant("missing", "biology", "read")


def test_buckets_are_listed_by_name_and_forgotten(store: Store) -> None:
    physics = store.ensure_tenant("physics")
    for name in ("zeta", "alpha", "mid"):
        store.add_bucket(name, physics)
    assert [b.name for b in store.buckets()] == ["alpha", "mid", "zeta"]
    store.remove_bucket("mid")
    store.remove_bucket("never-there")
    assert [b.name for b in store.buckets()] == ["alpha", "zeta"]
    assert store.add_bucket("mid", physics), "a forgotten name can be taken again"
