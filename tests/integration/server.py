"""Start a real `aifactory up` in a subprocess for integration tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from openai import OpenAI

from unix_users import make_traversable

REPO = Path(__file__).parents[2]


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768+), where outgoing
    connections and replica launchers pick theirs, so nothing takes it before
    the server binds it."""
    for _ in range(100):
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port between 20000 and 32000")


def processes_mentioning(marker: str) -> list[str]:
    """Command lines of live processes whose argv contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    data_dir: Path
    url: str
    admin_key: str
    objects_url: str = ""
    ca_file: Path | None = None  # the CA an https server's certificate is verified with

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

    @property
    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=30,
            verify=self.verify,
        )

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AIFACTORY_DATA_DIR": str(self.data_dir),
            "AIFACTORY_API_URL": self.url,
            **({"AIFACTORY_TLS_CA": str(self.ca_file)} if self.ca_file else {}),
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "aifactory", *args],
            env={**self.env(), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"aifactory {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def deploy(self, spec: str) -> None:
        response = self.admin.post("/api/services", content=spec)
        assert response.status_code in (200, 201), response.text

    def wait_ready(self, service: str, count: int = 1, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            summary = self.admin.get(f"/api/services/{service}").json()
            if summary["ready"] >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"{service} not ready: {summary}\n{self.log_tail()}")

    def wait_gone(self, service: str, timeout_s: float = 60) -> None:
        """Wait until a deleted service's replicas drained and the service is gone."""
        deadline = time.monotonic() + timeout_s
        while self.admin.get(f"/api/services/{service}").status_code != 404:
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} still there\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self) -> str:
        log = self.data_dir / "server.out"
        return log.read_text()[-4000:] if log.exists() else ""

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def client_for(server: Server, tenant: str) -> OpenAI:
    """An ``openai`` client with a new key of ``tenant``."""
    key = server.admin.post("/api/keys", json={"tenant": tenant}).json()["key"]
    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def start_server(data_dir: Path, port: int | None = None, **settings: str) -> Server:
    for _attempt in range(3):
        try:
            return _start_server(data_dir, port or free_port(), **settings)
        except PortTaken:
            if port is not None:
                raise
    raise AssertionError("could not find a free port for the server")


class PortTaken(AssertionError):
    pass


def _start_server(data_dir: Path, port: int, **settings: str) -> Server:
    env = {
        **os.environ,
        "AIFACTORY_DATA_DIR": str(data_dir),
        "AIFACTORY_PORT": str(port),
        "AIFACTORY_CONFIG": str(data_dir / "absent.toml"),
        # Tests run servers side by side: let each broker pick free ports.
        "AIFACTORY_FUNCTIONS_WORKER_PORT": "0",
        "AIFACTORY_FUNCTIONS_CLIENT_PORT": "0",
        "AIFACTORY_OBJECTS_PORT": str(free_port()),
        **{f"AIFACTORY_{k.upper()}": v for k, v in settings.items()},
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        # Workloads run as their tenants' users: they pass through to their
        # own folder in the data directory (pytest makes its folders 0700).
        make_traversable(data_dir)
    out = open(data_dir / "server.out", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "aifactory", "up"], env=env, stdout=out, stderr=subprocess.STDOUT
    )
    tls = "tls_cert" in settings
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    ca_file = Path(settings.get("tls_ca") or settings["tls_cert"]) if tls else None
    verify = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (data_dir / "server.out").read_text()
            if "already in use" in output.lower():
                raise PortTaken(output)
            raise AssertionError(output)
        try:
            if httpx.get(url + "/healthz", timeout=1, verify=verify).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    key = (data_dir / "admin.key").read_text().strip()
    objects_url = f"http://127.0.0.1:{env['AIFACTORY_OBJECTS_PORT']}"
    return Server(process, data_dir, url, key, objects_url, ca_file)
