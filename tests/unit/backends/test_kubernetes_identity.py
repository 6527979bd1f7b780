"""Pods that run as a tenant's identity, without a cluster: the security contexts they carry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from aifactory.backends import AllocationRequest, KubernetesJobRunner
from aifactory.backends.kubernetes.backend import KubernetesBackend
from aifactory.backends.kubernetes.connection import KubernetesConnection
from aifactory.errors import BackendError
from aifactory.identity import Identity, lookup
from aifactory.specs import Resources, load_job

ALICE = Identity(
    user="alice", uid=1001, group="alice", gid=1001, groups=(27, 1500), home="/home/alice"
)
POD_SECURITY = {
    "runAsUser": 1001,
    "runAsGroup": 1001,
    "supplementalGroups": [27, 1500],
    "runAsNonRoot": True,
    "fsGroup": 1001,
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
}
HOME_VOLUME = {"name": "home", "emptyDir": {}}
HOME_MOUNT = {"name": "home", "mountPath": "/home/workload"}


def replica_pod(identity: Identity | None, **changes: Any) -> dict[str, Any]:
    """The Pod manifest of a replica with a secret token, as the backend renders it."""
    values: dict[str, Any] = {
        "replica_id": "chat-a1b2c3",
        "service": "chat",
        "argv": ("/opt/aifactory/bin/python", "-m", "aifactory.launcher", "--", "llama-server"),
        "resources": Resources(cpus=1, memory_gib=1),
        "time_limit_s": None,
        "log_path": Path("/tmp/chat.log"),
        "secret_files": (Path("/var/lib/aif/alice/secrets/chat-a1b2c3.token"),),
        "identity": identity,
    }
    values.update(changes)
    backend = KubernetesBackend(
        "ab12cd34",
        KubernetesConnection(
            namespace="ml",
            image="localhost/aif:1",
            kubeconfig="/nonexistent/kubeconfig",
            host_paths=["/opt/venv"],
        ),
    )
    pod: dict[str, Any] = yaml.safe_load(backend.render(AllocationRequest(**values)))
    return pod


def job_pods(identity: Identity | None, **fields: Any) -> list[dict[str, Any]]:
    """The pod templates of a batch job's set of Jobs, as the runner renders them."""
    runner = KubernetesJobRunner(
        "ab12cd34",
        KubernetesConnection(
            namespace="batch",
            image="localhost/aif:1",
            kubeconfig="/nonexistent/kubeconfig",
            host_paths=["/opt/venv"],
        ),
    )
    document = {"name": "train", "command": ["python", "t.py"], "backend": "kubernetes"}
    job = load_job({**document, **fields})
    text = runner.render(job, "train-0a1b2c", identity=identity)
    return [manifest["spec"]["template"]["spec"] for manifest in yaml.safe_load_all(text)]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container["env"]}


def test_a_replica_pod_runs_as_its_identity_with_no_privileges() -> None:
    spec = replica_pod(ALICE)["spec"]
    assert spec["securityContext"] == POD_SECURITY
    (container,) = spec["containers"]
    assert container["securityContext"] == CONTAINER_SECURITY
    assert env_of(container)["HOME"] == "/home/workload"
    assert HOME_VOLUME in spec["volumes"]
    assert HOME_MOUNT in container["volumeMounts"]


def test_the_secret_volume_is_readable_by_the_identitys_group_alone() -> None:
    spec = replica_pod(ALICE)["spec"]
    (secret,) = [v for v in spec["volumes"] if "secret" in v]
    # The kubelet writes the files as root; fsGroup gives them to alice's group.
    assert secret["secret"] == {"secretName": "aif-ab12cd34-chat-a1b2c3", "defaultMode": 0o440}
    assert spec["securityContext"]["fsGroup"] == ALICE.gid
    (container,) = spec["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == secret["name"])
    assert mount == {
        "name": "secrets",
        "mountPath": "/var/lib/aif/alice/secrets",
        "readOnly": True,
    }


def test_every_pod_of_a_batch_job_runs_as_its_identity() -> None:
    specs = job_pods(ALICE, nodes=2)
    assert len(specs) == 2
    for spec in specs:
        assert spec["securityContext"] == POD_SECURITY
        (container,) = spec["containers"]
        assert container["securityContext"] == CONTAINER_SECURITY
        assert env_of(container)["HOME"] == "/home/workload"
        assert spec["volumes"] == [
            {"name": "host-0", "hostPath": {"path": "/opt/venv"}},
            HOME_VOLUME,
        ]
        assert container["volumeMounts"] == [
            {"name": "host-0", "mountPath": "/opt/venv", "readOnly": True},
            HOME_MOUNT,
        ]


def test_a_home_the_spec_sets_is_kept() -> None:
    (spec,) = job_pods(ALICE, env={"HOME": "/scratch/alice"})
    (container,) = spec["containers"]
    assert env_of(container)["HOME"] == "/scratch/alice"
    assert HOME_VOLUME not in spec["volumes"]
    assert container["securityContext"] == CONTAINER_SECURITY


def test_single_user_mode_pods_are_left_as_they_were() -> None:
    spec = replica_pod(None)["spec"]
    (container,) = spec["containers"]
    assert "securityContext" not in spec
    assert "securityContext" not in container
    assert "HOME" not in env_of(container)
    assert all(v["name"] != "home" for v in spec["volumes"])
    (job_spec,) = job_pods(None)
    assert "securityContext" not in job_spec
    assert "securityContext" not in job_spec["containers"][0]


@pytest.mark.parametrize(
    "root",
    [
        Identity(user="root", uid=0, group="root", gid=0),
        Identity(user="toor", uid=0, group="users", gid=100),
        Identity(user="alice", uid=1001, group="root", gid=0),
    ],
)
def test_root_is_refused_for_replicas_and_jobs(root: Identity) -> None:
    with pytest.raises(BackendError, match="never run as root") as caught:
        replica_pod(root)
    assert "--unix-user" in caught.value.fix
    with pytest.raises(BackendError, match="never run as root"):
        job_pods(root)


@pytest.mark.skipif(os.getuid() != 0, reason="the test users are created by root only")
def test_a_looked_up_tenant_user_renders_its_own_ids() -> None:
    alice = lookup("aif-alice")
    spec = replica_pod(alice)["spec"]
    assert spec["securityContext"] == {
        "runAsUser": alice.uid,
        "runAsGroup": alice.gid,
        "supplementalGroups": list(alice.groups),
        "runAsNonRoot": True,
        "fsGroup": alice.gid,
    }
    assert alice.uid >= 1000
