"""The state store on a real PostgreSQL: migrations, shared counters, two gateways.

Needs the dev PostgreSQL (`deploy/postgres-dev.sh up`; the test command starts it).
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text
from tests.unit.store.test_store_times import (
    check_a_ledger_day_is_a_utc_day_as_text,
    check_every_time_reads_back_in_utc,
)
from tests.unit.tenancy.test_slot_leases import check_slots_of_a_silent_holder_are_reclaimed

from aifactory.errors import QuotaExceeded
from aifactory.store import Store
from aifactory.tenancy import Limiter, Principal, issue_key

from .server import REPO, Server, start_server

SCRIPT = REPO / "deploy" / "postgres-dev.sh"
EMBED = "all-minilm-l6-v2"


def _postgres_url() -> str | None:
    if subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode != 0:
        return None
    return subprocess.run(
        ["bash", str(SCRIPT), "url"], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def pg_url() -> str:
    url = _postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL: run `deploy/postgres-dev.sh up` first")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def test_migrations_build_the_schema_and_are_idempotent(pg_url: str) -> None:
    store = Store(pg_url)
    store.create_schema()
    store.create_schema()
    tables = set(inspect(store.engine).get_table_names())
    assert {"alembic_version", "usage", "limits", "counters", "audit", "services"} <= tables
    key = issue_key(store, "lab")
    assert store.list_keys()[0]["tenant"] == "lab" and key.secret.startswith("aif-")
    store.close()


def test_counters_never_spend_twice_across_processes(pg_url: str) -> None:
    stores = [Store(pg_url), Store(pg_url)]
    stores[0].create_schema()
    taken: list[bool] = []

    def work(store: Store) -> None:
        for _ in range(25):
            grant = store.counters.lease(
                "shared", give=0, want=1, need=1, capacity=60, rate=0.0, now=1e9
            )
            taken.append(grant.granted == 1)

    threads = [threading.Thread(target=work, args=(stores[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert taken.count(True) == 60 and len(taken) == 200
    for store in stores:
        store.close()


@pytest.fixture
def two_gateways(pg_url: str, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    full = start_server(tmp_path / "a", database_url=pg_url, local_cpus="1")
    gateway = None
    try:
        full.deploy((REPO / "examples" / "embeddings.yaml").read_text())
        full.wait_ready("embeddings")
        # The gateway shares the database, so the admin key made by the first is its too.
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "admin.key").write_text(full.admin_key)
        gateway = start_server(tmp_path / "b", database_url=pg_url, role="gateway")
        yield full, gateway
    finally:
        if gateway is not None:
            gateway.stop()
        full.stop()


def _embed(server: Server, auth: dict[str, str]) -> int:
    return httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": EMBED, "input": "shared limits"},
        headers=auth,
        timeout=60,
    ).status_code


def _tenant(server: Server, name: str, **limits: object) -> dict[str, str]:
    server.admin.post("/api/tenants", json={"name": name})
    assert server.admin.put(f"/api/tenants/{name}/limits", json=limits).status_code == 200
    key = server.admin.post("/api/keys", json={"tenant": name}).json()["key"]
    return {"Authorization": f"Bearer {key}"}


def test_two_gateways_share_one_rate_limit_under_load(two_gateways: tuple[Server, Server]) -> None:
    full, gateway = two_gateways
    auth = _tenant(full, "shared", requests_per_minute=10)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: _embed((full, gateway)[i % 2], auth), range(24)))
    assert codes.count(200) == 10, codes
    assert codes.count(429) == 14


def test_two_gateways_share_one_token_budget(two_gateways: tuple[Server, Server]) -> None:
    full, gateway = two_gateways
    probe = _tenant(full, "probe", requests_per_minute=1000)
    tokens = httpx.post(
        f"{full.url}/v1/embeddings",
        json={"model": EMBED, "input": "shared limits"},
        headers=probe,
        timeout=60,
    ).json()["usage"]["prompt_tokens"]
    auth = _tenant(full, "budgeted", token_budget=3 * tokens)
    codes = [_embed((gateway, full)[i % 2], auth) for i in range(5)]
    assert codes == [200, 200, 200, 429, 429], "both gateways see the same spend"


def test_slots_of_a_crashed_gateway_are_given_back(pg_url: str) -> None:
    crashed, survivor = Store(pg_url), Store(pg_url)
    crashed.create_schema()
    check_slots_of_a_silent_holder_are_reclaimed(crashed, survivor)
    crashed.close()
    survivor.close()


def test_a_budget_spent_while_a_lease_is_under_way_is_refused_on_both_gateways(
    pg_url: str,
) -> None:
    """One gateway's request uses the whole budget while that gateway's lease is in flight."""
    stores = [Store(pg_url), Store(pg_url)]
    stores[0].create_schema()
    tenant_id = stores[0].ensure_tenant("lab")
    stores[0].set_limits(tenant_id, None, token_budget=10, period="day")
    who = Principal(key_id=1, tenant_id=tenant_id, tenant="lab", role="member")

    async def scenario() -> None:
        a, b = Limiter(stores[0]), Limiter(stores[1])
        admission = await a.admit(who)  # its take() starts a prefetch of a's next slice
        await asyncio.sleep(0)  # that prefetch leaves for PostgreSQL
        a.settle(admission, 10)  # the engine answered first: the whole budget is used
        with pytest.raises(QuotaExceeded):
            await a.admit(who)
        await a.stop()  # a's leases, the debt's included, are done
        with pytest.raises(QuotaExceeded, match=r"\(10 used\)"):
            await b.admit(who)
        await b.stop()

    asyncio.run(scenario())
    for store in stores:
        store.close()


@pytest.mark.parametrize("zone", [None, "Asia/Tokyo"])
def test_times_read_back_in_utc_whatever_the_sessions_time_zone(
    pg_url: str, zone: str | None
) -> None:
    """As on SQLite (tests/unit/store/test_store_times.py): the API's JSON is the same."""
    store = Store(pg_url if zone is None else f"{pg_url}?options=-c%20timezone%3D{zone}")
    store.create_schema()
    if zone is not None:
        with store.engine.connect() as connection:
            assert connection.execute(text("SHOW timezone")).scalar() == zone
    check_every_time_reads_back_in_utc(store)
    check_a_ledger_day_is_a_utc_day_as_text(store)
    store.close()
