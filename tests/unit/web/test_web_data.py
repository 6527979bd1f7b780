"""The dashboard's data endpoints in-process: who sees which tenant's usage."""

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aifactory.api import Access
from aifactory.config import Settings
from aifactory.control import ControlPlane
from aifactory.errors import APIError
from aifactory.store import Store
from aifactory.tenancy import KeyAuthenticator, issue_key
from aifactory.web import DashboardData, MetricsSampler


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    settings = Settings(data_dir=tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    plane = ControlPlane(settings, store)
    access = Access(KeyAuthenticator(store))
    app = Starlette(
        routes=DashboardData(plane, MetricsSampler(), access).routes(),
        exception_handlers={APIError: _status},
    )
    keys = {t: issue_key(store, t, "admin" if t == "ops" else "member") for t in ("ops", "a", "b")}
    for tenant in ("a", "b"):
        store.add_usage(
            [
                {
                    "tenant_id": store.ensure_tenant(tenant),
                    "api_key_id": keys[tenant].key_id,
                    "model": "m",
                    "endpoint": "chat",
                    "prompt_tokens": 5,
                    "completion_tokens": 7,
                }
            ]
            * 2
        )
    return {"app": app, "keys": {t: k.secret for t, k in keys.items()}}


async def _status(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse({"error": str(exc)}, status_code=exc.status_code)


def get(world: dict[str, Any], path: str, tenant: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {world['keys'][tenant]}"} if tenant else {}

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=world["app"], raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(call())


def test_a_user_sees_only_its_own_tenants_usage(world: dict[str, Any]) -> None:
    rows = get(world, "/api/dashboard/usage?bucket_s=60", "a").json()["buckets"]
    assert [(r["tenant"], r["requests"], r["prompt_tokens"]) for r in rows] == [("a", 2, 10)]
    assert rows[0]["start"] % 60 == 0


def test_an_admin_sees_every_tenant(world: dict[str, Any]) -> None:
    rows = get(world, "/api/dashboard/usage", "ops").json()["buckets"]
    assert {r["tenant"] for r in rows} == {"a", "b"}


def test_csv_export_is_scoped_the_same_way(world: dict[str, Any]) -> None:
    response = get(world, "/api/dashboard/usage?format=csv", "b")
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0] == "start,tenant,model,requests,prompt_tokens,completion_tokens"
    assert len(lines) == 2 and ",b,m,2,10,14" in lines[1]


def test_every_endpoint_needs_a_key(world: dict[str, Any]) -> None:
    for path in ("me", "overview", "usage", "buckets"):
        assert get(world, f"/api/dashboard/{path}", None).status_code == 401, path


def test_who_am_i_and_buckets_without_object_storage(world: dict[str, Any]) -> None:
    assert get(world, "/api/dashboard/me", "a").json() == {
        "tenant": "a",
        "role": "member",
        "may": ["infer", "read", "deploy"],
    }
    buckets = get(world, "/api/dashboard/buckets", "a").json()
    assert buckets == {"enabled": False, "message": "object storage not enabled", "buckets": []}


def test_bad_windows_are_refused(world: dict[str, Any]) -> None:
    assert get(world, "/api/dashboard/usage?window_s=abc", "a").status_code == 400
    assert get(world, "/api/dashboard/usage?window_s=2678400&bucket_s=10", "a").status_code == 400
