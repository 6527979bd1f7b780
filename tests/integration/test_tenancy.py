"""Tenants, limits, the ledger, keys and the audit log against a real server and engine."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from .server import Server

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


@pytest.mark.parametrize("who", ["user", "other-tenant"])
def test_a_user_key_cannot_administer(server: Server, who: str) -> None:
    auth = new_tenant(server, f"plain-{who}")
    for method, path in (
        ("GET", "/api/tenants"),
        ("POST", "/api/tenants"),
        ("PUT", "/api/tenants/ledger/limits"),
        ("GET", "/api/audit"),
    ):
        response = httpx.request(method, server.url + path, headers=auth, json={})
        assert response.status_code == 403, (method, path)
