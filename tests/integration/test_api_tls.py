"""HTTPS on the API: a test CA signs the server's certificate; launchers, the
openai SDK, the CLI and the functions Executor verify it; nothing answers in clear."""

from __future__ import annotations

import http.client
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from aifactory.functions import Executor
from aifactory.launcher import register

from .server import REPO, Server, start_server

CHAT_MODEL = "smollm2-135m-instruct"
POOL = """
kind: FunctionPool
name: tls-pool
workers: 1
allocations: {min: 0, max: 1}
resources: {cpus: 1, memory_gib: 1}
"""


def make_test_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for 127.0.0.1: (CA, cert, key)."""
    folder.mkdir()
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, request = folder / "cert.pem", folder / "key.pem", folder / "cert.csr"
    extensions = folder / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    for argv in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=aifactory test CA", "-keyout", str(ca_key), "-out", str(ca)],
        ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(request)],
        ["openssl", "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "1", "-extfile", str(extensions), "-out", str(cert)],
    ):  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True)
    ca.chmod(0o644)  # launchers run as the workload's user and read it
    return ca, cert, key


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("api-tls")
    ca, cert, key = make_test_ca(data_dir / "tls")
    srv = start_server(
        data_dir, local_cpus="2", tls_cert=str(cert), tls_key=str(key), tls_ca=str(ca)
    )
    # The server listens on https only: the replica is ready once its
    # launcher registered over https, verifying the certificate with --ca-file.
    srv.deploy((REPO / "examples" / "chat.yaml").read_text())
    srv.wait_ready("chat")
    yield srv
    assert srv.stop() in (0, -15), srv.log_tail()


def _openai(server: Server, http_client: httpx.Client) -> openai.OpenAI:
    key = server.admin.post("/api/keys", json={"tenant": "tls"}).json()["key"]
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, max_retries=0, http_client=http_client
    )


def test_the_openai_sdk_chats_and_streams_over_https(tls_server: Server) -> None:
    assert tls_server.url.startswith("https://")
    client = _openai(tls_server, httpx.Client(verify=tls_server.verify, timeout=120))
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
    )
    assert answer.choices[0].message.content
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=16,
        stream=True,
    )
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(chunks) > 2 and "".join(chunks)


def test_a_client_without_the_ca_is_refused_by_its_own_verification(tls_server: Server) -> None:
    client = _openai(tls_server, httpx.Client(timeout=30))
    with pytest.raises(openai.APIConnectionError) as refused:
        client.models.list()
    assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value.__cause__)
    # A launcher given the wrong CA gives up at once (no retries) and says why.
    with pytest.raises(RuntimeError, match="CERTIFICATE_VERIFY_FAILED"):
        register(tls_server.url, "r-0", "t", "127.0.0.1", 1, 0.0, ssl.create_default_context())
    cli = tls_server.cli("services", check=False)
    assert cli.returncode == 0, cli.stderr  # the CLI uses AIFACTORY_TLS_CA
    without_ca = subprocess.run(
        [sys.executable, "-m", "aifactory", "services"],
        env={k: v for k, v in tls_server.env().items() if k != "AIFACTORY_TLS_CA"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert without_ca.returncode != 0
    assert "failed TLS verification" in without_ca.stdout + without_ca.stderr


def test_plain_http_to_the_tls_port_gets_no_answer(tls_server: Server) -> None:
    plain = tls_server.url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/healthz", timeout=5)


def test_one_tls_connection_carries_several_requests(tls_server: Server) -> None:
    host, port = tls_server.url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(tls_server.ca_file))
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    connection.request("GET", "/healthz")
    assert connection.getresponse().read() and connection.sock is not None
    first = connection.sock
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    assert response.status == 200 and response.read()
    assert connection.sock is first  # HTTP/1.1 keep-alive: no new handshake
    connection.close()


def test_the_executor_finds_its_broker_over_https(
    tls_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_server.admin.post("/api/tenants", json={"name": "lab"})
    deployed = tls_server.admin.post("/api/services", params={"tenant": "lab"}, content=POOL)
    assert deployed.status_code == 201, deployed.text
    key = tls_server.admin.post("/api/keys", json={"tenant": "lab"}).json()["key"]
    monkeypatch.setenv("AIFACTORY_API_URL", tls_server.url)
    monkeypatch.setenv("AIFACTORY_API_KEY", key)
    monkeypatch.setenv("AIFACTORY_TLS_CA", str(tls_server.ca_file))
    monkeypatch.setenv("AIFACTORY_CONFIG", str(tls_server.data_dir / "absent.toml"))
    with Executor(pool="tls-pool", timeout_s=120) as ex:
        assert ex.submit(pow, 3, 4).result(timeout=120) == 81


def test_an_exposed_plain_api_warns_at_start_and_in_status(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "exposed", host="0.0.0.0")
    try:
        spec = (REPO / "examples" / "chat.yaml").read_text().replace("min: 1", "min: 0")
        srv.deploy(spec)
        status = srv.cli("status", "chat").stdout
        assert "UNENCRYPTED API" in " ".join(status.split())
        assert "UNENCRYPTED API" in (srv.data_dir / "server.out").read_text()
    finally:
        assert srv.stop() in (0, -15), srv.log_tail()
