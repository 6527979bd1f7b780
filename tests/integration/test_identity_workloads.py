"""Workloads run as their tenant's Unix user, locally and on Slurm, and reach nothing else.

Two tenants map to two real Unix users. Alice's function (on her own pool),
her agent and (on Slurm) her batch job try to read what the control plane
keeps (admin key, database, S3 master secret) and what Bob's workloads keep
(his replicas' secrets, his folder, his bucket): every try ends in
PermissionError, and each ran as Alice's uid. This is the issue's exploit: a
tenant's key that submits ``open(DATA_DIR/admin.key).read()`` gets
PermissionError. (Kubernetes Pods: test_identity_kubernetes.py.)
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from aifactory.functions import Executor

from .server import Server, start_server
from .slurm import MISSING

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="switching users needs root (CI is)")

PROBE_DIR = Path(__file__).parent / "identity_probe"
# Functions are pickled by reference: the probe module is importable here and,
# from the same file, on the pool's PYTHONPATH.
sys.path.insert(0, str(PROBE_DIR))
import probe  # noqa: E402


@pytest.fixture(scope="module", params=["local", "slurm"])
def factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    backend = request.param
    if backend == "slurm" and MISSING:
        pytest.skip(MISSING)
    data_dir = tmp_path_factory.mktemp(f"identity-{backend}")
    code = tmp_path_factory.mktemp("identity-code")
    shutil.copy(PROBE_DIR / "probe.py", code / "probe.py")
    code.chmod(0o755)  # the tenants' workers import it (pytest makes its folders 0700)
    srv = start_server(data_dir, local_cpus="3", default_backend=backend)
    for tenant, user in (("alice", "aif-alice"), ("bob", "aif-bob")):
        created = srv.admin.post("/api/tenants", json={"name": tenant, "unix_user": user})
        assert created.status_code == 201, created.text
        pool = _pool(f"{tenant}-pool", code)
        deployed = srv.admin.post("/api/services", params={"tenant": tenant}, content=pool)
        assert deployed.status_code == 201, deployed.text
    for tenant in ("alice", "bob"):
        srv.wait_ready(f"{tenant}-pool", timeout_s=120)
    yield srv
    srv.stop()


def _pool(name: str, code: Path) -> str:
    return f"""
kind: FunctionPool
name: {name}
workers: 1
allocations: {{min: 1, max: 1}}
resources: {{cpus: 1}}
env: {{PYTHONPATH: "{code}"}}
"""


def _key(server: Server, tenant: str) -> str:
    return str(server.admin.post("/api/keys", json={"tenant": tenant}).json()["key"])


def _targets(server: Server, bob_bucket: Path) -> list[str]:
    data = server.data_dir
    return [
        str(data / "admin.key"),
        str(data / "aifactory.db"),
        str(data / "objects.key"),
        str(data / "admin-s3-credentials"),
        str(data / "identities" / "aif-bob"),
        str(data / "identities" / "aif-bob" / "secrets"),
        str(data / "identities" / "aif-bob" / "spill"),
        str(bob_bucket),
        str(data),  # may be passed through, never listed
    ]


def _bobs_bucket(server: Server) -> Path:
    created = server.admin.post("/api/keys", json={"tenant": "bob"}).json()
    s3 = boto3.client(
        "s3",
        endpoint_url=server.objects_url,
        aws_access_key_id=created["s3_access_key_id"],
        aws_secret_access_key=created["s3_secret_access_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    s3.create_bucket(Bucket="bob-private")
    s3.put_object(Bucket="bob-private", Key="results.csv", Body=b"secret,42\n")
    bucket = server.data_dir / "objects" / "bob-private"
    assert (bucket / "results.csv").exists()
    return bucket


def test_a_tenants_function_runs_as_its_user_and_reaches_no_secret(factory: Server) -> None:
    alice = pwd.getpwnam("aif-alice")
    targets = _targets(factory, _bobs_bucket(factory))
    status = factory.admin.get("/v1/functions/pools/alice-pool").json()
    broker, server_key = status["broker"], status["broker_key"]
    with Executor(
        broker, "alice-pool", api_key=_key(factory, "alice"), server_key=server_key
    ) as pool:
        import probe

        report = pool.submit(probe.probe, targets).result(timeout=120)
    assert (report["uid"], report["euid"], report["gid"]) == (alice.pw_uid,) * 2 + (alice.pw_gid,)
    assert 0 not in report["groups"]
    assert report["control_plane_settings"] == []
    assert {path: report["outcomes"][path] for path in targets} == {
        path: "PermissionError" for path in targets
    }


def test_the_exploit_of_the_issue_ends_in_permission_error(factory: Server) -> None:
    admin_key = str(factory.data_dir / "admin.key")
    status = factory.admin.get("/v1/functions/pools/alice-pool").json()
    broker, server_key = status["broker"], status["broker_key"]
    with Executor(
        broker, "alice-pool", api_key=_key(factory, "alice"), server_key=server_key
    ) as pool:
        future = pool.submit(probe.read_text, admin_key)
        with pytest.raises(PermissionError):
            future.result(timeout=120)


def test_a_tenants_agent_runs_as_its_user_and_reaches_no_secret(factory: Server) -> None:
    alice = pwd.getpwnam("aif-alice")
    targets = _targets(factory, factory.data_dir / "objects" / "bob-private")
    spec = {
        "kind": "Agent",
        "name": "alice-agent",
        "command": [sys.executable, str(PROBE_DIR / "probe.py"), *targets],
        "env": {"PROBE_IDLE": "1"},
        "resources": {"cpus": 1, "memory_gib": 0.5},
    }
    deployed = factory.admin.post(
        "/api/services", params={"tenant": "alice"}, content=json.dumps(spec)
    )
    assert deployed.status_code == 201, deployed.text
    report = _probe_line(factory, "alice-agent")
    assert report["uid"] == alice.pw_uid and report["gid"] == alice.pw_gid
    assert report["home"] == alice.pw_dir
    assert report["control_plane_settings"] == []
    assert report["outcomes"] == {path: "PermissionError" for path in targets}
    replicas = factory.admin.get("/api/services/alice-agent/replicas").json()["replicas"]
    assert {r["run_as"] for r in replicas} == {"aif-alice"}
    factory.admin.delete("/api/services/alice-agent")


def _probe_line(server: Server, service: str, timeout_s: float = 90) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = server.admin.get(f"/api/services/{service}/logs")
        logs = answer.text if answer.status_code == 200 else ""
        found = re.search(r"^PROBE (\{.*\})$", logs, re.MULTILINE)
        if found:
            return dict(json.loads(found.group(1)))
        time.sleep(0.5)
    raise AssertionError(f"{service} printed no probe report\n{server.log_tail()}")


def test_the_control_planes_own_files_are_private(factory: Server) -> None:
    data = factory.data_dir
    assert data.stat().st_mode & 0o777 == 0o711
    for name in ("admin.key", "objects.key", "aifactory.db", "admin-s3-credentials"):
        assert (data / name).stat().st_mode & 0o777 == 0o600, name
    for user in ("aif-alice", "aif-bob"):
        own = data / "identities" / user
        entry = pwd.getpwnam(user)
        assert (own.stat().st_uid, own.stat().st_mode & 0o777) == (entry.pw_uid, 0o700)


def test_a_tenant_mapped_to_root_a_system_user_or_a_hostile_name_is_refused(
    factory: Server,
) -> None:
    for user in ("root", "daemon", "aif-workload", "../etc", "a;b", "$(id)", "x\ny", "nobody-xyz"):
        refused = factory.admin.post("/api/tenants", json={"name": "mallory", "unix_user": user})
        assert refused.status_code == 400, (user, refused.text)
        assert refused.json()["error"]["param"] == "unix_user"
    for name in ("../x", "a;b", "$(id)", "x\ny", "Root"):
        refused = factory.admin.post("/api/tenants", json={"name": name})
        assert refused.status_code == 400, (name, refused.text)
    assert factory.admin.get("/api/tenants/mallory").status_code == 404


@pytest.mark.parametrize("factory", ["slurm"], indirect=True)  # batch jobs need a scheduler
def test_a_tenants_batch_job_runs_as_its_user_and_reaches_no_secret(factory: Server) -> None:
    alice = pwd.getpwnam("aif-alice")
    targets = _targets(factory, factory.data_dir / "objects" / "bob-private")
    admin_of_alice = factory.admin.post("/api/keys", json={"tenant": "alice", "role": "admin"})
    headers = {"Authorization": f"Bearer {admin_of_alice.json()['key']}"}
    job = {
        "kind": "Job",
        "name": "alice-probe",
        "command": [sys.executable, str(PROBE_DIR / "probe.py"), *targets],
        "resources": {"cpus": 1, "memory_gib": 0.5},
        "time_limit": "5m",
        "backend": "slurm",
    }
    submitted = httpx.post(
        f"{factory.url}/api/jobs", content=json.dumps(job), headers=headers, timeout=60
    )
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = httpx.get(f"{factory.url}/api/jobs/{job_id}", headers=headers).json()["state"]
        if state in ("completed", "failed"):
            break
        time.sleep(1)
    assert state == "completed"
    view = httpx.get(f"{factory.url}/api/jobs/{job_id}", headers=headers).json()
    job_handle = view["slurm_job_id"]
    assert view["run_as"] == "aif-alice"
    logs = httpx.get(f"{factory.url}/api/jobs/{job_id}/logs", headers=headers).text
    report = json.loads(re.search(r"^PROBE (\{.*\})$", logs, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert (report["uid"], report["gid"]) == (alice.pw_uid, alice.pw_gid)
    assert report["control_plane_settings"] == []
    assert report["outcomes"] == {path: "PermissionError" for path in targets}
    # Slurm's own accounting knows the job as alice's (sacct -u aif-alice).
    accounted = subprocess.run(
        ["sacct", "-c", "-P", "-n", "-u", "aif-alice", "-o", "JobID,JobName,User"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert f"{job_handle}|aif-job-alice-probe|aif-alice({alice.pw_uid})" in accounted


def test_replicas_show_who_they_run_as(factory: Server) -> None:
    pools = factory.cli("services").stdout
    assert re.search(r"alice-pool.*aif-alice", pools)
    assert re.search(r"bob-pool.*aif-bob", pools)
    shown = factory.cli("tenants", "show", "alice").stdout
    assert "workloads run as aif-alice" in shown
