"""Tenants, limits, the ledger, keys and the audit log against a real server and engine."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from unix_users import open_folder

from .server import REPO, Server, processes_mentioning, start_server

EMBED = "all-minilm-l6-v2"
CHAT = "smollm2-135m-instruct"
TEXT = "the quick brown fox jumps over the lazy dog"


def new_tenant(server: Server, name: str, **limits: Any) -> dict[str, str]:
    """A tenant with ``limits`` and one user key; returns its auth header."""
    assert server.admin.post("/api/tenants", json={"name": name}).status_code in (200, 201)
    if limits:
        response = server.admin.put(f"/api/tenants/{name}/limits", json=limits)
        assert response.status_code == 200, response.text
    key = server.admin.post("/api/keys", json={"tenant": name}).json()["key"]
    return {"Authorization": f"Bearer {key}"}


def embed(server: Server, auth: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": EMBED, "input": TEXT},
        headers=auth,
        timeout=60,
    )


def tokens_per_embedding(server: Server) -> int:
    reply = embed(server, new_tenant(server, "probe"))
    assert reply.status_code == 200, reply.text
    return int(reply.json()["usage"]["prompt_tokens"])


def admitted_until_refused(server: Server, auth: dict[str, str]) -> tuple[int, httpx.Response]:
    for count in range(50):
        reply = embed(server, auth)
        if reply.status_code != 200:
            return count, reply
    raise AssertionError("never refused")


def test_requests_per_minute_trip_at_the_limit(server: Server) -> None:
    auth = new_tenant(server, "rpm", requests_per_minute=3)
    admitted, refusal = admitted_until_refused(server, auth)
    assert admitted == 3
    assert refusal.status_code == 429
    error = refusal.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "3 requests per minute" in error["message"] and "tenant 'rpm'" in error["message"]
    assert 1 <= int(refusal.headers["retry-after"]) <= 20


def test_tokens_per_minute_trip_at_the_limit(server: Server) -> None:
    k = tokens_per_embedding(server)
    auth = new_tenant(server, "tpm", tokens_per_minute=2 * k + 1)
    admitted, refusal = admitted_until_refused(server, auth)
    assert admitted == 3, "admitted while tokens remain: 0, k, 2k used"
    assert refusal.status_code == 429
    assert f"{2 * k + 1} tokens per minute" in refusal.json()["error"]["message"]


def test_token_budget_trips_and_says_when_it_resets(server: Server) -> None:
    k = tokens_per_embedding(server)
    auth = new_tenant(server, "budget", token_budget=2 * k, period="day")
    admitted, refusal = admitted_until_refused(server, auth)
    assert admitted == 2
    error = refusal.json()["error"]
    assert refusal.status_code == 429 and error["code"] == "insufficient_quota"
    assert "resets at" in error["message"] and "token budget" in error["message"]
    assert 0 < int(refusal.headers["retry-after"]) <= 86_400
    shown = server.admin.get("/api/tenants/budget").json()["spent_this_period"]
    assert shown["period"] == "day"


def test_key_limits_apply_to_that_key_only(server: Server) -> None:
    auth = new_tenant(server, "keyed")
    keys = server.admin.get("/api/keys").json()["keys"]
    key_id = next(k["id"] for k in keys if k["tenant"] == "keyed")
    limited = server.admin.put(
        "/api/tenants/keyed/limits", json={"key_id": key_id, "requests_per_minute": 1}
    )
    assert limited.status_code == 200, limited.text
    other = {
        "Authorization": "Bearer "
        + server.admin.post("/api/keys", json={"tenant": "keyed"}).json()["key"]
    }
    assert admitted_until_refused(server, auth)[0] == 1
    assert embed(server, other).status_code == 200


def test_concurrent_requests_limit(server: Server) -> None:
    auth = new_tenant(server, "conc", concurrent_requests=1)
    started = threading.Event()
    outcome: dict[str, int] = {}

    def long_stream() -> None:
        body = {
            "model": CHAT,
            "messages": [{"role": "user", "content": "Count to fifty."}],
            "max_tokens": 64,
            "stream": True,
            "ignore_eos": True,
        }
        with httpx.stream(
            "POST", f"{server.url}/v1/chat/completions", json=body, headers=auth, timeout=120
        ) as response:
            outcome["first"] = response.status_code
            for _ in response.iter_lines():
                started.set()

    worker = threading.Thread(target=long_stream)
    worker.start()
    assert started.wait(60)
    second = embed(server, auth)
    worker.join()
    assert outcome["first"] == 200
    assert second.status_code == 429 and "1 requests in flight" in second.json()["error"]["message"]
    assert embed(server, auth).status_code == 200, "the slot came back"


def test_ledger_equals_what_the_engine_reported(server: Server) -> None:
    auth = new_tenant(server, "ledger")
    reported = {"prompt_tokens": 0, "completion_tokens": 0}
    for question in ("Say yes.", "Name a colour.", "Count to three."):
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": CHAT,
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 8,
            },
            headers=auth,
            timeout=60,
        ).json()
        for field in reported:
            reported[field] += reply["usage"][field]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = server.admin.get("/api/usage", params={"tenant": "ledger", "by": "model"}).json()
        if rows["usage"] and rows["usage"][0]["entries"] == 3:
            break
        time.sleep(0.3)
    (row,) = rows["usage"]
    assert row["model"] == CHAT
    assert {f: row[f] for f in reported} == reported
    own = httpx.get(f"{server.url}/api/usage", headers=auth).json()["usage"]
    assert [r["tenant"] for r in own] == ["ledger"]
    csv = server.cli("usage", "--tenant", "ledger", "--format", "csv").stdout
    assert csv.splitlines()[0].startswith("tenant,model,entries,prompt_tokens")
    assert f",{reported['prompt_tokens']},{reported['completion_tokens']}," in csv


def test_revoked_and_expired_keys_are_refused_everywhere(server: Server) -> None:
    issued = server.admin.post("/api/keys", json={"tenant": "short", "expires_in": "2s"}).json()
    assert issued["expires_at"]
    auth = {"Authorization": f"Bearer {issued['key']}"}
    assert embed(server, auth).status_code == 200
    time.sleep(2.2)
    revoked_key = server.admin.post("/api/keys", json={"tenant": "short"}).json()
    server.admin.delete(f"/api/keys/{revoked_key['id']}")
    revoked = {"Authorization": f"Bearer {revoked_key['key']}"}
    time.sleep(0.1)
    for headers in (auth, revoked):
        assert embed(server, headers).status_code == 401
        for path in ("/v1/functions", "/api/usage", "/v1/functions/calls"):
            assert httpx.get(server.url + path, headers=headers).status_code == 401, path
    assert "unknown, revoked or expired" in embed(server, auth).json()["error"]["message"]


def test_admin_actions_are_audited(server: Server) -> None:
    new_tenant(server, "audited", requests_per_minute=100)
    entries = server.admin.get("/api/audit").json()["audit"]
    actions = {(e["action"], e["target"].split(" ")[0]) for e in entries}
    assert {("tenant.created", "audited"), ("limits.changed", "audited")} <= actions
    assert ("key.created", "audited") in actions
    created = next(e for e in entries if e["action"] == "limits.changed")
    assert created["actor_tenant"] == "admin" and created["detail"]["requests_per_minute"] == 100
    assert "limits.changed" in server.cli("audit").stdout


def test_tenants_cli(server: Server) -> None:
    out = server.cli(
        "tenants", "create", "physics-lab", "--slurm-account", "phys", "--slurm-qos", "normal"
    ).stdout
    assert "account phys" in out and "qos normal" in out
    limits = server.cli("tenants", "limits", "physics-lab", "--rpm", "60", "--node-hours", "10")
    assert "'requests_per_minute': 60" in limits.stdout
    shown = server.cli("tenants", "show", "physics-lab").stdout
    assert "node_hour_budget" in shown and "account phys" in shown
    assert "physics-lab" in server.cli("tenants", "ls").stdout
    bad = server.cli("tenants", "limits", "physics-lab", "--period", "year", check=False)
    assert bad.returncode != 0 and "period must be 'day' or 'month'" in bad.stderr


def test_a_user_key_cannot_administer(server: Server) -> None:
    auth = new_tenant(server, "plain-user")
    for method, path in (
        ("GET", "/api/tenants"),
        ("POST", "/api/tenants"),
        ("PUT", "/api/tenants/ledger/limits"),
        ("GET", "/api/audit"),
    ):
        response = httpx.request(method, server.url + path, headers=auth, json={})
        assert response.status_code == 403, (method, path)


AGENT_PROGRAM = """
import os, time
from openai import OpenAI
client = OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY come from the factory
reply = client.chat.completions.create(
    model="chat", messages=[{"role": "user", "content": "Say yes."}], max_tokens=4
)
with open(os.environ["ANSWER_FILE"] + ".tmp", "w") as out:
    out.write(reply.choices[0].message.content or "(empty)")
os.replace(os.environ["ANSWER_FILE"] + ".tmp", os.environ["ANSWER_FILE"])
while True:
    time.sleep(1)
"""


def test_an_agent_uses_the_models_with_its_own_key(server: Server, tmp_path: Path) -> None:
    assert server.admin.post("/api/tenants", json={"name": "bots"}).status_code in (200, 201)
    # The agent runs as the tenant's Unix user: its program and answer lie where it may reach.
    folder = open_folder(tmp_path)
    program = folder / "agent.py"
    program.write_text(AGENT_PROGRAM)
    program.chmod(0o644)
    answer = folder / "answer.txt"
    spec = {
        "kind": "Agent",
        "name": "asker",
        "command": [sys.executable, str(program)],
        "env": {"ANSWER_FILE": str(answer)},
    }
    deployed = server.admin.post(
        "/api/services", params={"tenant": "bots"}, content=json.dumps(spec)
    )
    assert deployed.status_code == 201, deployed.text
    deadline = time.monotonic() + 60
    while not answer.exists():
        assert time.monotonic() < deadline, server.cli("logs", "asker", check=False).stdout
        time.sleep(0.2)
    assert answer.read_text().strip()
    keys = [k for k in server.admin.get("/api/keys").json()["keys"] if k["name"] == "agent asker"]
    assert [(k["tenant"], k["revoked"]) for k in keys] == [("bots", False)]
    time.sleep(1.5)
    usage = server.admin.get("/api/usage", params={"tenant": "bots", "by": "key"}).json()
    assert [row["key"] for row in usage["usage"]] == [keys[0]["id"]], "charged to the agent's key"
    server.cli("delete", "asker")
    keys = [k for k in server.admin.get("/api/keys").json()["keys"] if k["name"] == "agent asker"]
    assert keys[0]["revoked"], "deleting the agent revokes its key"
    assert processes_mentioning(str(program)) == []


def test_the_example_agent_answers_questions_from_a_bucket(server: Server) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    assert server.admin.post("/api/tenants", json={"name": "helpdesk"}).status_code in (200, 201)
    spec = yaml.safe_load((REPO / "examples" / "agent" / "agent.yaml").read_text())
    spec["command"] = [sys.executable, str(REPO / "examples" / "agent" / "answerer.py")]
    spec["env"]["AGENT_POLL_S"] = "0.3"
    deployed = server.admin.post(
        "/api/services", params={"tenant": "helpdesk"}, content=json.dumps(spec)
    )
    assert deployed.status_code == 201, deployed.text

    def s3_for(tenant: str) -> Any:
        key = server.admin.post("/api/keys", json={"tenant": tenant}).json()
        endpoint = server.admin.get("/api/objects/status").json()["endpoint"]
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key["s3_access_key_id"],
            aws_secret_access_key=key["s3_secret_access_key"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    colleague = s3_for("helpdesk")
    deadline = time.monotonic() + 60
    while "agent-inbox" not in {b["Name"] for b in colleague.list_buckets()["Buckets"]}:
        assert time.monotonic() < deadline, server.cli("logs", "answerer", check=False).stdout
        time.sleep(0.3)
    colleague.put_object(Bucket="agent-inbox", Key="questions/q1", Body=b"Say yes.")
    while True:
        try:
            answer = colleague.get_object(Bucket="agent-inbox", Key="answers/q1")["Body"].read()
            break
        except ClientError:
            assert time.monotonic() < deadline, server.cli("logs", "answerer", check=False).stdout
            time.sleep(0.3)
    assert answer.strip()
    with pytest.raises(ClientError, match=r"AccessDenied|NoSuchBucket"):
        s3_for("outsiders").get_object(Bucket="agent-inbox", Key="answers/q1")
    server.cli("delete", "answerer")
    time.sleep(1.5)  # the ledger flushes once a second
    kinds = {
        row["kind"]: row
        for row in server.admin.get(
            "/api/usage", params={"tenant": "helpdesk", "by": "kind"}
        ).json()["usage"]
    }
    assert kinds["tokens"]["completion_tokens"] > 0, "the agent's questions to the model"
    assert kinds["objects"]["bytes_in"] >= len(b"Say yes.") + len(answer)
    assert kinds["objects"]["bytes_out"] >= len(answer) and kinds["objects"]["calls"] > 3


def test_replicas_alive_at_shutdown_are_charged(tmp_path: Path) -> None:
    first = start_server(tmp_path / "stop", local_cpus="1")
    assert first.admin.post("/api/tenants", json={"name": "ends"}).status_code == 201
    spec = (REPO / "examples" / "embeddings.yaml").read_text()
    assert first.admin.post("/api/services", params={"tenant": "ends"}, content=spec).is_success
    first.wait_ready("embeddings")
    time.sleep(1)
    assert first.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    again = start_server(tmp_path / "stop", local_cpus="1")
    try:
        rows = again.admin.get("/api/usage", params={"tenant": "ends", "by": "kind"}).json()
        (allocation,) = [r for r in rows["usage"] if r["kind"] == "allocation"]
        assert allocation["seconds"] >= 1 and allocation["node_hours"] > 0, allocation
    finally:
        again.stop()
