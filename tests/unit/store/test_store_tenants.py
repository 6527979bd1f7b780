"""The store's tenants, keys, limits and audit trail, on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime

from aifactory.store import LimitSet, Store


def test_ensure_tenant_creates_once_and_then_finds_it(store: Store) -> None:
    physics = store.ensure_tenant("physics")
    assert store.ensure_tenant("physics") == physics
    assert store.ensure_tenant("biology") != physics
    assert [t.name for t in store.tenants()] == ["biology", "physics"]
    found = store.tenant("physics")
    assert found is not None and found.id == physics
    assert store.tenant_by_id(physics) is not None
    assert store.tenant("chemistry") is None


def test_a_key_is_found_by_its_hash_with_its_tenant_and_role(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    key_id = store.add_key(tenant, "h" * 64, "aif-abc", "admin", "ops")
    record = store.key_by_hash("h" * 64)
    assert record is not None
    assert (record.key_id, record.tenant_id, record.tenant, record.role) == (
        key_id,
        tenant,
        "physics",
        "admin",
    )
    assert not record.revoked and record.expires_at is None
    assert store.key_by_hash("x" * 64) is None


def test_an_expiry_comes_back_as_an_aware_utc_time(store: Store) -> None:
    # The authenticator compares it with datetime.now(UTC): a naive one would raise.
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.add_key(store.ensure_tenant("physics"), "h" * 64, "aif-abc", "user", "", expires)
    record = store.key_by_hash("h" * 64)
    assert record is not None and record.expires_at == expires
    assert record.expires_at > datetime.now(UTC)


def test_a_revoked_key_says_so_and_is_revoked_only_once(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    key_id = store.add_key(tenant, "h" * 64, "aif-abc", "user", "")
    assert store.revoke_key(key_id)
    assert not store.revoke_key(key_id), "already revoked"
    assert not store.revoke_key(key_id + 100), "no such key"
    assert not store.revoke_key(99056840515380133888), "beyond any id the column holds"
    assert not store.revoke_key(-1)
    record = store.key_by_hash("h" * 64)
    assert record is not None and record.revoked
    assert [k["revoked"] for k in store.list_keys()] == [True]


def test_only_unrevoked_admin_keys_count_as_admins(store: Store) -> None:
    ops = store.ensure_tenant("ops")
    first = store.add_key(ops, "a" * 64, "aif-a", "admin", "")
    store.add_key(ops, "b" * 64, "aif-b", "admin", "")
    store.add_key(ops, "c" * 64, "aif-c", "user", "")
    assert store.count_admin_keys() == 2
    store.revoke_key(first)
    assert store.count_admin_keys() == 1


def test_the_key_listing_never_shows_a_hash(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    store.add_key(tenant, "h" * 64, "aif-abc", "user", "laptop")
    store.add_key(tenant, "i" * 64, "aif-def", "user", "cluster")
    keys = store.list_keys()
    assert [(k["tenant"], k["prefix"], k["name"]) for k in keys] == [
        ("physics", "aif-abc", "laptop"),
        ("physics", "aif-def", "cluster"),
    ]
    assert not any("h" * 64 in str(value) for k in keys for value in k.values())


def test_an_s3_access_key_leads_to_its_api_key(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    key_id = store.add_key(tenant, "h" * 64, "aif-abc", "user", "")
    store.add_s3_access_key(key_id, "AKAF0123")
    record = store.key_by_s3_access_key("AKAF0123")
    assert record is not None and record.key_id == key_id and record.tenant == "physics"
    assert store.key_by_s3_access_key("AKAF9999") is None


def test_tenant_and_key_limits_are_kept_apart(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    key = store.add_key(tenant, "h" * 64, "aif-abc", "user", "")
    other_key = store.add_key(tenant, "i" * 64, "aif-def", "user", "")
    assert store.limits_of(tenant, key) == (None, None)
    store.set_limits(tenant, None, requests_per_minute=60, period="day")
    store.set_limits(tenant, key, tokens_per_minute=1000)
    tenant_limits, key_limits = store.limits_of(tenant, key)
    assert tenant_limits == LimitSet(requests_per_minute=60, period="day")
    assert key_limits == LimitSet(tokens_per_minute=1000)
    assert store.limits_of(tenant, other_key) == (tenant_limits, None)
    assert store.limits_of(tenant, None) == (tenant_limits, None)


def test_setting_some_limits_keeps_the_others_and_none_clears_one(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    store.set_limits(tenant, None, requests_per_minute=60, token_budget=1000)
    store.set_limits(tenant, None, token_budget=None, concurrent_requests=4)
    limits, _ = store.limits_of(tenant, None)
    assert limits == LimitSet(requests_per_minute=60, concurrent_requests=4)


def test_only_request_limits_concern_the_gateway() -> None:
    assert not LimitSet().any_request_limit
    assert not LimitSet(node_hour_budget=10, gpu_hour_budget=1).any_request_limit
    assert LimitSet(token_budget=0).any_request_limit, "a zero budget is a limit"


def test_a_tenants_slurm_defaults_can_be_changed(store: Store) -> None:
    store.ensure_tenant("physics")
    store.update_tenant("physics", slurm_account="phys", unix_user="aif-alice")
    row = store.tenant("physics")
    assert row is not None and (row.slurm_account, row.unix_user) == ("phys", "aif-alice")


def test_the_audit_trail_lists_the_newest_actions_first(store: Store) -> None:
    for n in range(5):
        store.add_audit(actor_tenant="ops", action="keys.create", target=f"key {n}")
    newest = store.audit(limit=3)
    assert [row.target for row in newest] == ["key 4", "key 3", "key 2"]
