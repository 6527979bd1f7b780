import asyncio
from pathlib import Path

import pytest

from aifactory.errors import Unauthorized
from aifactory.store import Store
from aifactory.tenancy import KeyAuthenticator, KeyScope, UsageLedger, hash_key, issue_key, keys


def _store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.create_schema()
    return store


def test_keys_are_stored_hashed_only(tmp_path: Path) -> None:
    store = _store(tmp_path)
    issued = issue_key(store, "physics", "member", "laptop")
    assert issued.secret.startswith("aif-") and len(issued.secret) > 40
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the db and its WAL
    assert issued.secret.encode() not in raw
    assert hash_key(issued.secret).encode() in raw
    listed = store.list_keys()
    assert listed[0]["tenant"] == "physics" and "key_hash" not in listed[0]


def test_authenticate_and_revoke(tmp_path: Path) -> None:
    store = _store(tmp_path)
    issued = issue_key(store, "physics")

    async def scenario() -> None:
        auth = KeyAuthenticator(store)
        principal = await auth.authenticate(issued.secret)
        assert principal is not None and principal.tenant == "physics" and not principal.is_admin
        assert await auth.authenticate("aif-wrong") is None
        assert store.revoke_key(issued.key_id)
        assert await KeyAuthenticator(store).authenticate(issued.secret) is None

    asyncio.run(scenario())


def test_a_header_that_passed_is_known_until_the_cache_would_ask_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    issued = issue_key(store, "physics", scope=KeyScope(services=("chat",)))
    header = f"Bearer {issued.secret}"
    monkeypatch.setattr(keys, "_CACHE_TTL_S", 1.0)  # room for a slow machine between two lines

    async def scenario() -> None:
        auth = KeyAuthenticator(store)
        assert auth.passed(header) is None
        principal = await auth.authenticate_header(header)
        assert principal.services == frozenset({"chat"})
        assert auth.passed(header) == principal
        assert auth.passed("Bearer aif-wrong") is None
        assert store.revoke_key(issued.key_id)
        await asyncio.sleep(1.05)
        assert auth.passed(header) is None
        with pytest.raises(Unauthorized):
            await auth.authenticate_header(header)

    asyncio.run(scenario())


def test_ledger_writes_in_batches(tmp_path: Path) -> None:
    store = _store(tmp_path)
    issued = issue_key(store, "physics")
    principal_tenant = store.key_by_hash(hash_key(issued.secret))
    assert principal_tenant is not None

    async def scenario() -> None:
        ledger = UsageLedger(store, flush_interval_s=60)
        ledger.start()
        for _ in range(3):
            ledger.record(
                tenant_id=principal_tenant.tenant_id,
                key_id=issued.key_id,
                model="smol",
                endpoint="chat",
                prompt_tokens=10,
                completion_tokens=4,
            )
        assert store.usage_totals() == []  # nothing written on the request path
        await ledger.stop()

    asyncio.run(scenario())
    (total,) = store.usage_totals()
    assert (total.tenant, total.model, total.requests) == ("physics", "smol", 3)
    assert (total.prompt_tokens, total.completion_tokens) == (30, 12)
