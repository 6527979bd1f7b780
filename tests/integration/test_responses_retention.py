"""Stored responses expire after the site's retention, and the control plane deletes them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import openai
import pytest

from .server import REPO, Server, client_for, start_server

CHAT = "smollm2-135m-instruct"
RETENTION_S = 3


@pytest.fixture(scope="module")
def short_memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("retention")
    srv = start_server(data_dir, local_cpus="1", responses_retention_s=str(RETENTION_S))
    try:
        srv.deploy((REPO / "examples" / "chat.yaml").read_text())
        srv.wait_ready("chat")
        yield srv
    finally:
        assert srv.stop() in (0, -15), srv.log_tail()


def _rows(server: Server, response_id: str) -> int:
    with sqlite3.connect(server.data_dir / "aifactory.db") as db:
        found = db.execute("SELECT COUNT(*) FROM stored_responses WHERE id = ?", (response_id,))
        return int(found.fetchone()[0])


def test_a_response_past_the_retention_is_gone_then_deleted(short_memory: Server) -> None:
    client = client_for(short_memory, "physics")
    response = client.responses.create(model=CHAT, input="Say hi.", max_output_tokens=4)
    kept = time.monotonic()  # it was kept before the answer came back
    assert client.responses.retrieve(response.id).id == response.id
    assert client.responses.input_items.list(response.id).data
    assert _rows(short_memory, response.id) == 1
    time.sleep(max(0.0, kept + RETENTION_S + 0.5 - time.monotonic()))
    # Past the retention it is not found, whether or not the sweep has run yet.
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as chained:
        client.responses.create(
            model=CHAT, input="And now?", previous_response_id=response.id, max_output_tokens=4
        )
    assert chained.value.body["param"] == "previous_response_id"  # type: ignore[index]
    # The reconciler's sweep (every RETENTION_S here) deletes the row.
    deadline = time.monotonic() + 4 * RETENTION_S
    while _rows(short_memory, response.id) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _rows(short_memory, response.id) == 0
