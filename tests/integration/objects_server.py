"""Start a real `aifactory objects serve` for the object storage integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from aifactory.store import Store
from aifactory.tenancy import issue_key, load_s3_master

from .server import free_port


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        return self.data_dir / "objects"

    def issue(self, tenant: str, role: str = "member") -> tuple[str, str]:
        """A fresh key's S3 pair, minted in the server's own database."""
        store = Store(f"sqlite:///{self.data_dir / 'aifactory.db'}")
        try:
            master = load_s3_master(self.data_dir / "objects.key")
            issued = issue_key(store, tenant, role, "test", s3_master=master)
        finally:
            store.close()
        return issued.s3_access_key_id, issued.s3_secret_access_key

    def client(self, credentials: tuple[str, str], **config: Any) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=credentials[0],
            aws_secret_access_key=credentials[1],
            region_name="us-east-1",
            verify=False,
            config=Config(retries={"max_attempts": 1}, **config),
        )

    def log_tail(self) -> str:
        log = self.data_dir / "objects.out"
        return log.read_text()[-4000:] if log.exists() else ""

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def start_objects_server(data_dir: Path, **settings: str) -> S3Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):
        port = free_port()
        env = {
            **os.environ,
            "AIFACTORY_DATA_DIR": str(data_dir),
            "AIFACTORY_OBJECTS_PORT": str(port),
            "AIFACTORY_CONFIG": str(data_dir / "absent.toml"),
            **{f"AIFACTORY_{k.upper()}": v for k, v in settings.items()},
        }
        out = open(data_dir / "objects.out", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "aifactory", "objects", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        scheme = "https" if "objects_tls_cert" in settings else "http"
        server = S3Server(process, data_dir, port, scheme)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return server
            except OSError:
                time.sleep(0.1)
        if "address already in use" not in server.log_tail():
            raise AssertionError(server.log_tail())
    raise AssertionError("could not find a free port for the S3 server")
