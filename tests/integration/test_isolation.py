"""Tenant isolation: another tenant's private models, pools, functions and usage do not exist.

A pool runs code only from keys of its own tenant; other tenants call only
the named functions it shared, with JSON over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aifactory.errors import Unauthorized
from aifactory.functions import Executor

from .server import REPO, Server, start_server

SECRET_MODEL = "alpha-embed"
POOL = "alpha-pool"
BETA_POOL = "beta-pool"


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("isolation")
    code = data_dir / "code"
    code.mkdir()
    (code / "alpha_code.py").write_text("def double(x):\n    return 2 * x\n")
    (code / "beta_code.py").write_text("def triple(x):\n    return 3 * x\n")
    srv = start_server(data_dir, local_cpus="3")
    for tenant in ("alpha", "beta"):
        assert srv.admin.post("/api/tenants", json={"name": tenant}).status_code == 201
    embeddings = (REPO / "examples" / "embeddings.yaml").read_text()
    private_service = (
        embeddings.replace("name: embeddings", "name: alpha-embeddings")
        .replace("name: all-minilm-l6-v2", f"name: {SECRET_MODEL}")
        .replace("aliases: [embed]", "aliases: []")
        + "private: true\n"
    )
    for spec in (private_service, _pool_spec(code)):
        response = srv.admin.post("/api/services", params={"tenant": "alpha"}, content=spec)
        assert response.status_code == 201, response.text
    beta_pool = _pool_spec(code).replace(POOL, BETA_POOL).replace("private: true\n", "")
    response = srv.admin.post("/api/services", params={"tenant": "beta"}, content=beta_pool)
    assert response.status_code == 201, response.text
    srv.wait_ready("alpha-embeddings")
    deployed = srv.admin.post(
        "/api/functions", json={"name": "double", "target": "alpha_code:double", "pool": POOL}
    )
    assert deployed.status_code == 201, deployed.text
    yield srv
    srv.stop()


def _pool_spec(code: Path) -> str:
    return f"""
kind: FunctionPool
name: {POOL}
workers: 1
allocations: {{min: 0, max: 1}}
private: true
env: {{PYTHONPATH: "{code}"}}
"""


def _key(server: Server, tenant: str) -> str:
    return str(server.admin.post("/api/keys", json={"tenant": tenant}).json()["key"])


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _embed(server: Server, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": SECRET_MODEL, "input": "secret"},
        headers=_auth(key),
        timeout=60,
    )


def test_a_private_model_serves_its_tenant_only(factory: Server) -> None:
    alpha, beta = _key(factory, "alpha"), _key(factory, "beta")
    assert _embed(factory, alpha).status_code == 200
    refused = _embed(factory, beta)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"

    def listed(key: str) -> set[str]:
        models = httpx.get(f"{factory.url}/v1/models", headers=_auth(key)).json()["data"]
        return {m["id"] for m in models}

    assert SECRET_MODEL in listed(alpha) and SECRET_MODEL not in listed(beta)
    assert SECRET_MODEL in listed(factory.admin_key)
    assert (
        httpx.get(f"{factory.url}/v1/models/{SECRET_MODEL}", headers=_auth(beta)).status_code == 404
    )


def test_a_private_pool_and_its_functions_serve_their_tenant_only(factory: Server) -> None:
    alpha, beta = _key(factory, "alpha"), _key(factory, "beta")
    url = f"{factory.url}/v1/functions/double/invoke"
    done = httpx.post(url, json={"args": [21]}, headers=_auth(alpha), timeout=120)
    assert done.status_code == 200 and done.json()["result"] == 42
    assert httpx.post(url, json={"args": [1]}, headers=_auth(beta)).status_code == 404
    listed = httpx.get(f"{factory.url}/v1/functions", headers=_auth(beta)).json()["functions"]
    assert listed == []
    status = factory.admin.get(f"/v1/functions/pools/{POOL}").json()
    broker, server_key = status["broker"], status["broker_key"]
    with pytest.raises(Unauthorized, match="no function pool"):
        Executor(broker, POOL, api_key=beta, server_key=server_key)
    with Executor(broker, POOL, api_key=alpha, server_key=server_key) as pool:
        assert pool.submit(pow, 2, 10).result(timeout=120) == 1024


def test_usage_of_another_tenant_is_invisible(factory: Server) -> None:
    alpha, beta = _key(factory, "alpha"), _key(factory, "beta")
    assert _embed(factory, alpha).status_code == 200
    time.sleep(1.5)  # the ledger flushes once a second
    own = httpx.get(f"{factory.url}/api/usage", headers=_auth(alpha)).json()["usage"]
    assert {row["tenant"] for row in own} == {"alpha"}
    theirs = httpx.get(f"{factory.url}/api/usage?tenant=alpha", headers=_auth(beta))
    assert theirs.status_code == 404
    mine = httpx.get(f"{factory.url}/api/usage", headers=_auth(beta)).json()["usage"]
    assert all(row["tenant"] == "beta" for row in mine)
    calls = httpx.get(f"{factory.url}/v1/functions/calls", headers=_auth(beta)).json()["calls"]
    assert calls == []


def test_a_pool_runs_code_only_from_keys_of_its_tenant(factory: Server) -> None:
    alpha, beta = _key(factory, "alpha"), _key(factory, "beta")
    status = factory.admin.get(f"/v1/functions/pools/{BETA_POOL}").json()
    broker, server_key = status["broker"], status["broker_key"]
    with pytest.raises(Unauthorized, match=r"belongs to tenant 'beta'.*shares over HTTP"):
        Executor(broker, BETA_POOL, api_key=alpha, server_key=server_key)
    with pytest.raises(Unauthorized, match=r"submit code with a key of 'beta'.*--tenant admin"):
        Executor(broker, BETA_POOL, api_key=factory.admin_key, server_key=server_key)
    inference = factory.admin.post("/api/keys", json={"tenant": "beta", "role": "inference"})
    with pytest.raises(Unauthorized, match=r"'inference' key calls named functions only"):
        Executor(broker, BETA_POOL, api_key=inference.json()["key"], server_key=server_key)
    with Executor(broker, BETA_POOL, api_key=beta, server_key=server_key) as pool:
        assert pool.submit(pow, 3, 3).result(timeout=120) == 27


def test_a_named_function_answers_another_tenant_once_shared(factory: Server) -> None:
    alpha, beta = _key(factory, "alpha"), _key(factory, "beta")
    url = f"{factory.url}/api/functions"
    triple = {"name": "triple", "target": "beta_code:triple", "pool": BETA_POOL}
    refused = httpx.post(url, json=triple, headers=_auth(alpha))
    assert refused.status_code == 403 and "belongs to tenant 'beta'" in refused.text
    assert httpx.post(url, json=triple, headers=_auth(beta)).status_code == 201
    invoke = f"{factory.url}/v1/functions/triple/invoke"
    assert httpx.post(invoke, json={"args": [2]}, headers=_auth(alpha)).status_code == 404
    unshared = httpx.post(invoke, json={"args": [2]}, headers=_auth(factory.admin_key))
    assert unshared.status_code == 403 and "has not shared it" in unshared.text

    shared = httpx.post(url, json=triple | {"shared": True}, headers=_auth(beta))
    assert shared.status_code == 200 and shared.json()["result"] == "shared"
    listed = httpx.get(f"{factory.url}/v1/functions", headers=_auth(alpha)).json()["functions"]
    assert {(f["name"], f["shared"]) for f in listed} == {("double", False), ("triple", True)}
    done = httpx.post(invoke, json={"args": [14]}, headers=_auth(alpha), timeout=120)
    assert done.status_code == 200, done.text
    assert done.json()["result"] == 42 and done.json()["status"] == "succeeded"
    assert httpx.delete(f"{url}/triple", headers=_auth(alpha)).status_code == 403
    assert httpx.delete(f"{url}/triple", headers=_auth(beta)).status_code == 200


def test_a_private_pools_functions_cannot_be_shared(factory: Server) -> None:
    alpha = _key(factory, "alpha")
    shared = {"name": "leak", "target": "alpha_code:double", "pool": POOL, "shared": True}
    refused = httpx.post(f"{factory.url}/api/functions", json=shared, headers=_auth(alpha))
    assert refused.status_code == 400 and "is private" in refused.json()["error"]["message"]
