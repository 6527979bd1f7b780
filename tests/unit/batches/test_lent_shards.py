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

from aifactory.backends import HostMount, KubernetesJobRunner
from aifactory.backends.kubernetes.connection import KubernetesConnection
from aifactory.batches.shards import KubernetesShards, ShardLaunch, SlurmShards
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
    slurm = shards.job(_launch(tmp_path, lend=lend)).slurm
    assert (slurm.partition, slurm.qos) == expected
