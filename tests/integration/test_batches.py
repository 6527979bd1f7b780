"""The OpenAI Batch API with the openai SDK against a real `aifactory up`, on the local stack.

Each batch starts the model's real engine (llama.cpp with SmolLM2 or
all-MiniLM) in a worker process run as the tenant's Unix user; its answers
must match direct calls to the deployed service for the same custom_id.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from .batches import (
    FINAL,
    chat_lines,
    check_chat_answers,
    check_embeddings,
    embedding_lines,
    lines_of,
    short_chat_lines,
    wait_completed,
    wait_for,
)
from .server import REPO, Server, client_for, processes_mentioning, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A control plane with the chat and embeddings services, and a small file limit."""
    srv = start_server(
        tmp_path_factory.mktemp("batches"), local_cpus="3", batch_max_file_bytes="300000"
    )
    for name in ("chat", "embeddings"):
        srv.deploy((REPO / "examples" / f"{name}.yaml").read_text())
    for name in ("chat", "embeddings"):
        srv.wait_ready(name)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def alice(server: Server) -> OpenAI:
    return client_for(server, "physics")


@pytest.fixture(scope="module")
def bob(server: Server) -> OpenAI:
    return client_for(server, "chemistry")


def _upload(client: OpenAI, data: bytes, name: str = "input.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(data)), purpose="batch").id


def _create(client: OpenAI, data: bytes, endpoint: str, **metadata: str) -> str:
    batch = client.batches.create(
        input_file_id=_upload(client, data),
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata=metadata or None,
    )
    assert batch.status == "validating"
    return batch.id


def test_a_1000_line_chat_batch_matches_direct_calls(server: Server, alice: OpenAI) -> None:
    count = 1000
    data = short_chat_lines(count)
    batch_id = _create(alice, data, "/v1/chat/completions")
    batch, took = wait_completed(alice, batch_id)
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (count, count)
    assert batch.error_file_id is None
    check_chat_answers(alice, data, lines_of(alice, batch.output_file_id))
    assert batch.usage is not None and batch.usage.output_tokens == count
    charges: dict[str, Any] = batch.usage.model_extra or {}
    assert charges["discount"] == 0.5 and charges["node_hours"] > 0
    assert charges["charged"]["completion_tokens"] == round(batch.usage.output_tokens * 0.5)
    progress = (batch.model_extra or {})["progress"]
    assert progress["lines_done"] == count and progress["jobs"][0]["attempts"] == 1
    assert progress["first_line_s"] is not None and progress["lines_per_s"] > 0
    print(f"\n{count}-line chat batch: {took:.1f}s, {progress}")
    time.sleep(1.5)  # the ledger writes once a second
    report = server.admin.get("/api/usage", params={"tenant": "physics", "by": "kind"}).json()
    (charged,) = [row for row in report["usage"] if row["kind"] == "batch"]
    assert charged["completion_tokens"] >= charges["charged"]["completion_tokens"], report
    assert charged["node_hours"] > 0


def test_a_1000_line_embeddings_batch_matches_direct_calls(alice: OpenAI) -> None:
    count = 1000
    data = embedding_lines(count)
    batch, took = wait_completed(alice, _create(alice, data, "/v1/embeddings"))
    check_embeddings(alice, data, lines_of(alice, batch.output_file_id))
    print(f"\n{count}-line embeddings batch: {took:.1f}s")


def test_a_warm_batch_runs_on_the_models_replica_without_a_worker(
    server: Server, alice: OpenAI
) -> None:
    count = 200
    data = short_chat_lines(count)
    started = time.monotonic()
    batch_id = _create(alice, data, "/v1/chat/completions", backend="warm")
    workers: set[str] = set()

    def finished(batch: Any) -> bool:
        workers.update(p for p in processes_mentioning(batch_id) if "batches.worker" in p)
        return batch.status in FINAL

    batch = wait_for(alice, batch_id, finished)
    took = time.monotonic() - started
    assert batch.status == "completed", batch
    assert workers == set()  # no engine of its own: the chat replica answered
    check_chat_answers(alice, data, lines_of(alice, batch.output_file_id))
    progress = (batch.model_extra or {})["progress"]
    assert progress["jobs"][0]["backend"] == "warm" and progress["jobs"][0]["attempts"] == 1
    charges: dict[str, Any] = (batch.usage.model_extra or {}) if batch.usage else {}
    assert batch.usage is not None and batch.usage.output_tokens == count
    assert charges["node_hours"] == 0
    print(f"\n{count}-line warm batch: {took:.1f}s, {progress}")


def test_files_are_in_the_tenants_bucket(server: Server, alice: OpenAI) -> None:
    data = chat_lines(3)
    uploaded = alice.files.create(file=("three.jsonl", io.BytesIO(data)), purpose="batch")
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (
        len(data),
        "three.jsonl",
        "batch",
    )
    assert alice.files.retrieve(uploaded.id).id == uploaded.id
    assert alice.files.content(uploaded.id).content == data
    on_disk = server.data_dir / "objects" / "batches-physics" / "files" / f"{uploaded.id}.jsonl"
    assert on_disk.read_bytes() == data
    assert uploaded.id in [f.id for f in alice.files.list()]
    assert alice.files.delete(uploaded.id).deleted
    assert not on_disk.exists()
    with pytest.raises(openai.NotFoundError):
        alice.files.retrieve(uploaded.id)


@pytest.mark.parametrize(
    ("lines", "wanted"),
    [
        (
            chat_lines(1) + b"not json\n",
            "line 2: not valid JSON",
        ),
        (chat_lines(2).replace(b'"q1"', b'"q0"'), "custom_id 'q0' appears twice (first on line 1)"),
        (
            chat_lines(1).replace(b"/v1/chat/completions", b"/v1/images"),
            "line 1: url must be one of",
        ),
        (chat_lines(1).replace(b'"POST"', b'"GET"'), "line 1: method must be 'POST'"),
    ],
)
def test_malformed_lines_are_refused_by_line(alice: OpenAI, lines: bytes, wanted: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _upload(alice, lines)
    error = refused.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error"
    assert wanted in error["message"], error


def test_an_oversize_file_is_refused(alice: OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        _upload(alice, chat_lines(1500))
    assert refused.value.status_code == 413
    assert "at most 300000 bytes" in str(refused.value.body)


def test_an_unknown_model_and_a_wrong_endpoint_are_refused(alice: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        _create(alice, chat_lines(2, model="no-such-model"), "/v1/chat/completions")
    assert "no-such-model" in str(unknown.value.body)
    with pytest.raises(openai.BadRequestError) as elsewhere:
        _create(alice, chat_lines(2), "/v1/embeddings")
    assert "not to the batch's endpoint /v1/embeddings" in str(elsewhere.value.body)
    with pytest.raises(openai.BadRequestError) as unserved:
        _create(alice, chat_lines(2, model="embed"), "/v1/chat/completions")
    assert "does not serve /v1/chat/completions" in str(unserved.value.body)


def test_another_tenant_sees_nothing(alice: OpenAI, bob: OpenAI) -> None:
    file_id = _upload(alice, chat_lines(2))
    batch = alice.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for call in (
        lambda: bob.files.retrieve(file_id),
        lambda: bob.files.content(file_id),
        lambda: bob.files.delete(file_id),
        lambda: bob.batches.retrieve(batch.id),
        lambda: bob.batches.cancel(batch.id),
        lambda: bob.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert file_id not in [f.id for f in bob.files.list()]
    assert batch.id not in [b.id for b in bob.batches.list()]
    assert wait_for(alice, batch.id).status == "completed"


def test_cancel_keeps_finished_lines(server: Server, alice: OpenAI) -> None:
    count = 40
    batch_id = _create(alice, chat_lines(count, max_tokens=64), "/v1/chat/completions")
    wait_for(alice, batch_id, lambda b: (b.model_extra or {})["progress"]["lines_done"] >= 3)
    assert alice.batches.cancel(batch_id).status == "cancelling"
    batch = wait_for(alice, batch_id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    out, errors = lines_of(alice, batch.output_file_id), lines_of(alice, batch.error_file_id)
    assert len(out) >= 3 and len(out) + len(errors) == count
    assert {line["custom_id"] for line in out + errors} == {f"q{i}" for i in range(count)}
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert processes_mentioning(batch_id) == []


def test_a_killed_shard_resumes_without_losing_or_repeating_lines(
    server: Server, alice: OpenAI
) -> None:
    count = 30
    batch_id = _create(alice, chat_lines(count, max_tokens=32), "/v1/chat/completions")
    wait_for(alice, batch_id, lambda b: (b.model_extra or {})["progress"]["lines_done"] >= 3)
    (worker,) = [p for p in processes_mentioning(batch_id) if "batches.worker" in p]
    os.killpg(int(worker.split(":")[0]), signal.SIGKILL)
    batch = wait_for(alice, batch_id)
    assert batch.status == "completed", batch
    out = lines_of(alice, batch.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"q{i}" for i in range(count))
    assert (batch.model_extra or {})["progress"]["jobs"][0]["attempts"] == 2
    shard = next(Path(server.data_dir).glob(f"identities/*/batches/{batch_id}/shard-0.jsonl"))
    assert len(shard.read_bytes().splitlines()) == count


def test_a_shard_past_its_walltime_resumes_in_a_new_run(server: Server, alice: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _create(alice, chat_lines(2), "/v1/chat/completions", time_limit="soon")
    assert "metadata.time_limit 'soon' is not a duration" in str(refused.value.body)
    # About 9 s of answering on an idle machine: the first run is cut whatever the load.
    count = 40
    batch_id = _create(
        alice, chat_lines(count, max_tokens=32), "/v1/chat/completions", time_limit="6s"
    )
    batch = wait_for(alice, batch_id)
    assert batch.status == "completed", batch
    out = lines_of(alice, batch.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"q{i}" for i in range(count))
    (job,) = (batch.model_extra or {})["progress"]["jobs"]
    assert job["attempts"] >= 2, job
    log = (server.data_dir / "logs" / "batches" / f"batch-{batch_id[6:18]}-0.log").read_text()
    assert "got SIGTERM" in log, log[-2000:]
    shard = next(Path(server.data_dir).glob(f"identities/*/batches/{batch_id}/shard-0.jsonl"))
    assert len(shard.read_bytes().splitlines()) == count


def _cli(server: Server, key: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "aifactory", "batches", *args],
        env={**server.env(), "AIFACTORY_API_KEY": key, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_the_cli_lists_shows_and_cancels_a_tenants_batches(
    server: Server, alice: OpenAI, bob: OpenAI
) -> None:
    batch_id = _create(alice, chat_lines(30, max_tokens=64), "/v1/chat/completions")
    wait_for(alice, batch_id, lambda b: (b.model_extra or {})["progress"]["lines_done"] >= 1)
    shown = _cli(server, alice.api_key, "show", batch_id)
    assert f"{batch_id}: in_progress" in shown and "/30 done" in shown, shown
    assert "local" in shown and "running" in shown and "lines/s" in shown, shown
    assert batch_id in _cli(server, alice.api_key, "ls")
    assert batch_id not in _cli(server, bob.api_key, "ls")
    assert f"batch {batch_id}: cancelling" in _cli(server, alice.api_key, "cancel", batch_id)
    assert wait_for(alice, batch_id).status == "cancelled"
    shown = _cli(server, alice.api_key, "show", batch_id)
    assert "cancelled" in shown and "discount" in shown, shown


def test_a_batch_past_its_window_expires_with_the_rest_in_the_error_file(alice: OpenAI) -> None:
    count = 40
    batch = alice.batches.create(
        input_file_id=_upload(alice, chat_lines(count, max_tokens=64)),
        endpoint="/v1/chat/completions",
        completion_window="6s",  # type: ignore[arg-type]
    )
    batch = wait_for(alice, batch.id)
    assert batch.status == "expired" and batch.expired_at is not None, batch
    out, errors = lines_of(alice, batch.output_file_id), lines_of(alice, batch.error_file_id)
    assert len(out) + len(errors) == count and errors
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert {line["custom_id"] for line in out + errors} == {f"q{i}" for i in range(count)}


def test_a_spent_token_budget_refuses_the_next_batch(server: Server) -> None:
    client = client_for(server, "economy")
    limits = server.admin.put("/api/tenants/economy/limits", json={"token_budget": 10})
    assert limits.status_code == 200, limits.text
    first = wait_for(client, _create(client, chat_lines(3), "/v1/chat/completions"))
    assert first.status == "completed"
    time.sleep(1.5)  # the ledger writes once a second
    with pytest.raises(openai.RateLimitError) as refused:
        _create(client, chat_lines(3), "/v1/chat/completions")
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "insufficient_quota"
    assert "token budget for this month is spent" in error["message"]


def _key(server: Server, **fields: Any) -> OpenAI:
    response = server.admin.post("/api/keys", json={"tenant": "physics", **fields})
    assert response.status_code == 201, response.text
    return OpenAI(base_url=f"{server.url}/v1", api_key=response.json()["key"], max_retries=0)


def test_an_inference_key_runs_batches_and_a_scoped_key_only_on_its_services(
    server: Server,
) -> None:
    inference = _key(server, role="inference", buckets=["elsewhere"])
    batch = wait_for(inference, _create(inference, embedding_lines(2), "/v1/embeddings"))
    assert batch.status == "completed" and len(lines_of(inference, batch.output_file_id)) == 2
    scoped = _key(server, role="member", services=["embeddings"])
    with pytest.raises(openai.NotFoundError):
        _create(scoped, chat_lines(2), "/v1/chat/completions")
    assert wait_for(scoped, _create(scoped, embedding_lines(2), "/v1/embeddings")).status == (
        "completed"
    )


def test_a_restarted_control_plane_resumes_its_batches(tmp_path: Path) -> None:
    # The chat service at zero replicas: only the batch's own engine runs.
    spec = (REPO / "examples" / "chat.yaml").read_text().replace("min: 1", "min: 0")
    srv = start_server(tmp_path / "restart", local_cpus="2")
    try:
        srv.deploy(spec)
        client = client_for(srv, "physics")
        count = 30
        batch_id = _create(client, chat_lines(count, max_tokens=32), "/v1/chat/completions")
        wait_for(client, batch_id, lambda b: (b.model_extra or {})["progress"]["lines_done"] >= 3)
        srv.process.kill()
        srv.process.wait()
        srv = start_server(
            tmp_path / "restart", port=int(srv.url.rsplit(":", 1)[1]), local_cpus="2"
        )
        batch = wait_for(client, batch_id)
        assert batch.status == "completed", batch
        out = lines_of(client, batch.output_file_id)
        assert [line["custom_id"] for line in out] == [f"q{i}" for i in range(count)]
        assert (batch.model_extra or {})["progress"]["jobs"][0]["attempts"] == 2
        shard = next(srv.data_dir.glob(f"identities/*/batches/{batch_id}/shard-0.jsonl"))
        ids = [json.loads(line)["custom_id"] for line in shard.read_bytes().splitlines()]
        assert sorted(ids) == sorted(f"q{i}" for i in range(count))
    finally:
        srv.stop()


def test_a_shard_output_turned_into_a_link_fails_the_batch_and_leaks_nothing(
    server: Server, alice: OpenAI, tmp_path: Path
) -> None:
    # What a tenant's job could do in its own folder: point its output at a
    # file only root reads (here, another tenant's answers).
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"custom_id": "q1", "response": {"status_code": 200}}) + "\n")
    secret.chmod(0o600)
    batch_id = _create(alice, chat_lines(30, max_tokens=32), "/v1/chat/completions")
    wait_for(alice, batch_id, lambda b: (b.model_extra or {})["progress"]["lines_done"] >= 1)
    shard = next(server.data_dir.glob(f"identities/*/batches/{batch_id}/shard-0.jsonl"))
    shard.rename(shard.with_suffix(".moved"))
    shard.symlink_to(secret)
    batch = wait_for(alice, batch_id)
    assert batch.status == "failed" and batch.failed_at is not None, batch
    assert batch.errors is not None and batch.errors.data
    assert "not the tenant's file" in (batch.errors.data[0].message or "")
    assert batch.output_file_id is None and batch.error_file_id is None
    assert processes_mentioning(batch_id) == []


def test_a_batch_waits_for_a_free_cpu_of_the_local_backend(alice: OpenAI) -> None:
    # Chat and embeddings hold 2 of the 3 CPUs: one batch engine fits at a time.
    first = _create(alice, chat_lines(20, max_tokens=32), "/v1/chat/completions")
    wait_for(alice, first, lambda b: (b.model_extra or {})["progress"]["jobs"][0]["job"] != "")
    second = _create(alice, chat_lines(3), "/v1/chat/completions")
    waiting = wait_for(
        alice,
        second,
        lambda b: "waiting for capacity" in b.model_extra["progress"]["jobs"][0]["reason"],
    )
    assert waiting.status == "in_progress"
    assert wait_for(alice, first).status == "completed"
    assert wait_for(alice, second).status == "completed"
