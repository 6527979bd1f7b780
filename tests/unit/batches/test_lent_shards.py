"""Lent shards: the site's place for preemptible work, never the user's pick.

On Kubernetes a lent shard's pod gets the site's low PriorityClass (and a
batch that asks for normal priority none); on Slurm, the lending partition
and QOS, and neither when the site has no lending partition.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from aifactory.backends import HostMount, KubernetesJobRunner
from aifactory.backends.kubernetes.connection import KubernetesConnection
from aifactory.batches.shards import KubernetesShards, ShardLaunch, SlurmShards
from aifactory.errors import BackendError
from aifactory.identity import Identity
from aifactory.specs import Job, Resources

ALICE = Identity(user="alice", uid=1001, group="alice", gid=1001)


def _launch(tmp_path: Path, *, lend: bool) -> ShardLaunch:
    return ShardLaunch(
        name="batch-abc-0",
        service="chat",
        argv=("python", "-m", "aifactory.batches.worker"),
        identity=ALICE,
        folder=tmp_path,
        input=tmp_path / "in.jsonl",
        resources=Resources(),
        time_limit_s=None,
        lend=lend,
        tenant=None,
    )


class _Recorder(KubernetesJobRunner):
    """Kubernetes' runner that keeps the manifests it would create instead of calling the API."""

    def __init__(self) -> None:
        super().__init__(
            "ab12cd34",
            KubernetesConnection(
                namespace="batch", image="localhost/aif:1", kubeconfig="/nonexistent/kubeconfig"
            ),
        )
        self.created: list[dict[str, Any]] = []

    async def submit(
        self,
        job: Job,
        job_id: str,
        log_dir: Path | None = None,
        identity: Identity | None = None,
        mounts: tuple[HostMount, ...] = (),
        priority_class: str = "",
    ) -> str:
        self.created += self.manifests(job, job_id, identity, mounts, priority_class)
        return job_id


def _pod(shards: KubernetesShards, runner: _Recorder, launch: ShardLaunch) -> Any:
    asyncio.run(shards.start(launch))
    return runner.created[-1]["spec"]["template"]["spec"]


def test_a_lent_shards_pod_has_the_sites_class_and_a_normal_ones_none(
    tmp_path: Path,
) -> None:
    runner = _Recorder()
    shards = KubernetesShards(runner, tmp_path, "aifactory-lent")
    lent = _pod(shards, runner, _launch(tmp_path, lend=True))
    assert lent["priorityClassName"] == "aifactory-lent"
    normal = _pod(shards, runner, _launch(tmp_path, lend=False))
    assert "priorityClassName" not in normal


def test_without_a_site_class_a_lent_shard_runs_at_the_default_priority(
    tmp_path: Path,
) -> None:
    runner = _Recorder()
    pod = _pod(KubernetesShards(runner, tmp_path), runner, _launch(tmp_path, lend=True))
    assert "priorityClassName" not in pod and "priority" not in pod


class _SlurmRunner:
    name = "slurm"


@pytest.mark.parametrize(
    ("partition", "lend", "expected"),
    [
        ("lend", True, ("lend", "lent")),
        ("lend", False, (None, None)),
        # No lending partition: the shard runs as the tenant's ordinary work.
        ("", True, (None, None)),
    ],
)
def test_a_lent_slurm_shard_goes_to_the_lending_partition_only_where_there_is_one(
    tmp_path: Path, partition: str, lend: bool, expected: tuple[str | None, str | None]
) -> None:
    shards = SlurmShards(_SlurmRunner(), None, partition, "lent")  # type: ignore[arg-type]
    job = shards.job(_launch(tmp_path, lend=lend))
    assert (job.slurm.partition, job.slurm.qos) == expected
    # A lent shard runs as a step: Slurm signals steps at preemption, the batch shell only later.
    step = ["srun", "--ntasks=1", "--cpus-per-task=1"] if expected[0] else []
    assert list(job.command) == [*step, "python", "-m", "aifactory.batches.worker"]


def test_a_site_class_the_cluster_lacks_refuses_the_run_with_the_fix(tmp_path: Path) -> None:
    # Kubernetes would take the Job and never make its pod (no such class): say so at start.
    kubeconfig = tmp_path / "kubeconfig"  # a server never reached: the calls are faked
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    connection = KubernetesConnection(namespace="batch", image="i:1", kubeconfig=str(kubeconfig))
    runner = KubernetesJobRunner("ab12cd34", connection)
    created: list[Any] = []

    async def call(method: Any, *args: Any, **kwargs: Any) -> Any:
        if method.__name__ == "read_priority_class":
            raise ApiException(status=404, reason="Not Found")
        created.append(args)
        return {}

    runner._call = call  # type: ignore[method-assign]
    shards = KubernetesShards(runner, tmp_path, "aifactory-lent")
    with pytest.raises(BackendError, match="PriorityClass 'aifactory-lent'") as refused:
        asyncio.run(shards.start(_launch(tmp_path, lend=True)))
    assert "k8s-priority-classes.yaml" in (refused.value.fix or "")
    assert created == []
    # Normal priority needs no class: it runs.
    asyncio.run(shards.start(_launch(tmp_path, lend=False)))
    assert len(created) == 1
