"""The Batch API on the real Slurm cluster: shards are batch jobs, lent unless asked otherwise.

The jobs run as the tenant's Unix user on the dev cluster's nodes, start the
model's engine there and write their answers to the tenant's folder; an
urgent job that preempts a lent shard only delays the batch.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from .batches import (
    chat_lines,
    check_chat_answers,
    check_embeddings,
    embedding_lines,
    lines_of,
    short_chat_lines,
    wait_completed,
    wait_for,
)
from .server import REPO, Server, client_for, start_server
from .slurm import needs_slurm

pytestmark = [pytest.mark.slurm, needs_slurm]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Chat and embeddings served locally (for direct calls); batches go to Slurm."""
    srv = start_server(
        tmp_path_factory.mktemp("slurmbatches"), local_cpus="2", slurm_lend_partition="lend"
    )
    try:
        for name in ("chat", "embeddings"):
            srv.deploy((REPO / "examples" / f"{name}.yaml").read_text())
        for name in ("chat", "embeddings"):
            srv.wait_ready(name)
        yield srv
    finally:
        for batch in _ours(srv):
            subprocess.run(["scancel", batch], check=False, timeout=30)
        srv.stop()


def _ours(srv: Server) -> list[str]:
    """Slurm job ids of this control plane's batch shards still known to squeue."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if "aif-job-batch-" in line]


@pytest.fixture(scope="module")
def alice(server: Server) -> OpenAI:
    return client_for(server, "physics")


def _create(client: OpenAI, data: bytes, endpoint: str, **metadata: str) -> str:
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
    return client.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata={"backend": "slurm", **metadata},
    ).id


def _partition(server: Server, batch_id: str) -> str:
    """The partition the shard's job script asked for ("" : the site's default)."""
    (script,) = server.data_dir.glob(f"identities/*/batches/{batch_id}/job.sh")
    found = re.search(r"^#SBATCH --partition=(\S+)$", script.read_text(), re.MULTILINE)
    return found.group(1) if found else ""


def _progress(client: OpenAI, batch_id: str) -> dict[str, Any]:
    progress: dict[str, Any] = (client.batches.retrieve(batch_id).model_extra or {})["progress"]
    return progress


def test_a_lent_1000_line_chat_batch_on_slurm_matches_direct_calls(
    server: Server, alice: OpenAI
) -> None:
    count = 1000
    data = short_chat_lines(count)
    batch_id = _create(alice, data, "/v1/chat/completions")
    batch, took = wait_completed(alice, batch_id)
    check_chat_answers(alice, data, lines_of(alice, batch.output_file_id))
    progress = (batch.model_extra or {})["progress"]
    (job,) = progress["jobs"]
    assert job["job"].isdigit() and _partition(server, batch_id) == "lend"
    assert progress["scheduler_wait_s"] is not None and progress["first_line_s"] is not None
    print(f"\n{count}-line Slurm chat batch: {took:.1f}s, {progress}")


def test_a_normal_priority_1000_line_embeddings_batch_on_slurm(
    server: Server, alice: OpenAI
) -> None:
    count = 1000
    data = embedding_lines(count)
    batch_id = _create(alice, data, "/v1/embeddings", priority="normal")
    batch, took = wait_completed(alice, batch_id)
    check_embeddings(alice, data, lines_of(alice, batch.output_file_id))
    assert _partition(server, batch_id) != "lend"
    print(f"\n{count}-line Slurm embeddings batch: {took:.1f}s")


def _node_of(job_id: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True, check=True
    ).stdout
    return out.strip()


def _state_of(job_id: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=True
    ).stdout
    return out.strip()


def test_a_preempted_shard_resumes_with_no_line_lost_or_repeated(
    server: Server, alice: OpenAI
) -> None:
    count = 150
    batch_id = _create(alice, chat_lines(count, max_tokens=48), "/v1/chat/completions")
    wait_for(alice, batch_id, lambda b: (b.model_extra or {})["progress"]["lines_done"] >= 3)
    (job,) = _progress(alice, batch_id)["jobs"]
    node = _node_of(job["job"])
    urgent = subprocess.run(
        [
            "sbatch", "--parsable", "--partition=urgent", f"--nodelist={node}",
            "--cpus-per-task=8", "--mem=100M", "--output=/dev/null",
            "--job-name=urgent-hpc", "--wrap=sleep 60",
        ],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    preempted = time.monotonic()
    try:
        # The shard runs as a step, so it hears the preemption at once and lets
        # the node go well before the lending partition's 20 s GraceTime ends.
        while _state_of(urgent) != "RUNNING":
            assert time.monotonic() - preempted < 18, "the lent shard held the node"
            time.sleep(0.5)
        yielded_s = time.monotonic() - preempted
        batch = wait_for(alice, batch_id, timeout_s=600)
    finally:
        subprocess.run(["scancel", urgent], check=False, timeout=30)
    assert batch.status == "completed", batch
    progress = (batch.model_extra or {})["progress"]
    assert progress["jobs"][0]["attempts"] >= 2, progress
    out = lines_of(alice, batch.output_file_id)
    assert [line["custom_id"] for line in out] == [f"q{i}" for i in range(count)]
    shard = next(server.data_dir.glob(f"identities/*/batches/{batch_id}/shard-0.jsonl"))
    ids = [json.loads(line)["custom_id"] for line in shard.read_bytes().splitlines()]
    assert len(ids) == len(set(ids)) == count
    print(f"\npreempted batch: the urgent job ran after {yielded_s:.1f} s; {progress}")


def test_cancel_stops_the_slurm_job_and_keeps_finished_lines(alice: OpenAI) -> None:
    count = 60
    batch_id = _create(alice, chat_lines(count, max_tokens=48), "/v1/chat/completions")
    wait_for(alice, batch_id, lambda b: (b.model_extra or {})["progress"]["lines_done"] >= 2)
    (job,) = _progress(alice, batch_id)["jobs"]
    assert _node_of(job["job"]), job  # running
    alice.batches.cancel(batch_id)
    batch = wait_for(alice, batch_id)
    assert batch.status == "cancelled", batch
    assert _node_of(job["job"]) == ""  # squeue no longer lists it
    out, errors = lines_of(alice, batch.output_file_id), lines_of(alice, batch.error_file_id)
    assert len(out) >= 2 and len(out) + len(errors) == count
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}


def test_a_batch_in_two_shards_runs_two_jobs_and_keeps_the_input_order(alice: OpenAI) -> None:
    count = 24
    batch_id = _create(alice, chat_lines(count), "/v1/chat/completions", shards="2")
    batch = wait_for(alice, batch_id)
    assert batch.status == "completed", batch
    jobs = (batch.model_extra or {})["progress"]["jobs"]
    assert [(j["shard"], j["lines_done"]) for j in jobs] == [(0, 12), (1, 12)]
    assert len({j["job"] for j in jobs}) == 2
    out = lines_of(alice, batch.output_file_id)
    assert [line["custom_id"] for line in out] == [f"q{i}" for i in range(count)]
