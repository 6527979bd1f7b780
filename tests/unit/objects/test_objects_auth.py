"""S3 credentials of API keys: derived, not stored; revocation disables them."""

import asyncio
from pathlib import Path

from aifactory.objects.s3.auth import StoreCredentials
from aifactory.store import Store
from aifactory.tenancy import issue_key, load_s3_master, s3_secret_for


def test_s3_secret_is_derived_and_never_stored(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.create_schema()
    master = load_s3_master(tmp_path / "objects.key")
    assert (tmp_path / "objects.key").stat().st_mode & 0o777 == 0o600
    assert load_s3_master(tmp_path / "objects.key") == master
    issued = issue_key(store, "physics", "user", "", s3_master=master)
    assert issued.s3_access_key_id.startswith("AKAF") and len(issued.s3_secret_access_key) == 40
    assert s3_secret_for(master, issued.s3_access_key_id) == issued.s3_secret_access_key
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("state"))
    assert issued.s3_secret_access_key.encode() not in raw
    assert issued.s3_access_key_id.encode() in raw

    async def lookups() -> None:
        credentials = StoreCredentials(store, master)
        found = await credentials.lookup(issued.s3_access_key_id)
        assert found is not None
        caller, secret = found
        assert (caller.tenant, caller.is_admin, secret) == (
            "physics",
            False,
            issued.s3_secret_access_key,
        )
        assert await credentials.lookup("AKAFNOSUCHKEY0000000") is None
        store.revoke_key(issued.key_id)
        assert await StoreCredentials(store, master).lookup(issued.s3_access_key_id) is None

    asyncio.run(lookups())
    store.close()


def test_keys_without_a_master_get_no_s3_pair(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.create_schema()
    issued = issue_key(store, "physics")
    assert issued.s3_access_key_id == "" and issued.s3_secret_access_key == ""
    store.close()
