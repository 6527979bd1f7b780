"""slurmctld outages: the control plane serves through them, restarts into them, and forgets no job."""

from __future__ import annotations

import time
from pathlib import Path

from openai import OpenAI

from .server import Server, start_server
from .slurm_outage import slurmctld_down
from .test_slurm import ask, our_jobs, pytestmark, spec

__all__ = ["pytestmark"]  # skipped, like test_slurm, where no Slurm cluster runs


def _first_answer(client: OpenAI, model: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ask(client, model):
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _jobs_stay(data_dir: Path, expected: set[str], for_s: float) -> None:
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        assert set(our_jobs(data_dir)) == expected, "a job was added or lost"
        time.sleep(1)


def test_restart_during_an_outage_serves_at_once_and_keeps_exactly_its_jobs(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "restart"
    srv: Server = start_server(data_dir, default_backend="slurm")
    try:
        srv.deploy(spec("outage", replicas=2))
        srv.wait_ready("outage", count=2)
        before = set(our_jobs(data_dir))
        assert len(before) == 2
        key = srv.admin.post("/api/keys", json={"tenant": "outage"}).json()["key"]
        port = int(srv.url.rsplit(":", 1)[1])
        with slurmctld_down():
            srv.process.kill()
            srv.process.wait()
            restarted_at = time.monotonic()
            srv = start_server(data_dir, port=port, default_backend="slurm")
            client = OpenAI(base_url=f"{srv.url}/v1", api_key=key, max_retries=0, timeout=20)
            _first_answer(client, "outage-model")
            time_to_serve = time.monotonic() - restarted_at
            for _ in range(3):
                assert ask(client, "outage-model")
        print(f"\ntime to serve after a restart during the outage: {time_to_serve:.1f}s")
        assert time_to_serve < 15, f"served only {time_to_serve:.1f}s after the restart"
        srv.wait_ready("outage", count=2, timeout_s=60)
        # Slurm answers again: adoption settles; no job is submitted or lost.
        _jobs_stay(data_dir, before, for_s=15)
        assert ask(client, "outage-model")
    finally:
        srv.stop()
    assert our_jobs(data_dir) == {}
