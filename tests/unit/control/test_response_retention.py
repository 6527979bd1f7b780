import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import OperationalError

from aifactory.control.response_retention import ResponseRetention
from aifactory.store import ResponseQueries, Store, StoredResponseRow


async def _sweep(retention: ResponseRetention) -> int | None:
    task = retention.sweep_if_due()
    return None if task is None else await task


class _Down(ResponseQueries):
    def __init__(self) -> None:
        pass

    def delete_responses_before(self, cutoff: datetime) -> int:
        raise OperationalError("DELETE", {}, Exception("connection refused"))


def test_a_sweep_survives_a_database_that_does_not_answer() -> None:
    assert asyncio.run(_sweep(ResponseRetention(_Down(), retention_s=60))) == 0


def _age(store: Store, response_id: str, seconds: float) -> None:
    with store._session() as s:
        row = s.get(StoredResponseRow, response_id)
        assert row is not None
        row.created_at = datetime.now(UTC) - timedelta(seconds=seconds)


def test_a_sweep_deletes_what_is_past_the_retention_and_waits_before_the_next(
    store: Store,
) -> None:
    tenant = store.ensure_tenant("physics")
    for response_id in ("resp_old", "resp_new"):
        store.add_response(response_id, tenant, {"id": response_id}, [], [{"id": "msg_1"}])
    _age(store, "resp_old", 120)
    retention = ResponseRetention(store, retention_s=60, every_s=3600)
    assert asyncio.run(_sweep(retention)) == 1
    assert store.stored_response("resp_old", tenant) is None
    kept = store.stored_response("resp_new", tenant)
    assert kept is not None and kept.input_items == [{"id": "msg_1"}]
    _age(store, "resp_new", 120)
    assert asyncio.run(_sweep(retention)) is None  # not due yet
    # Found no more once past the retention, swept or not.
    cutoff = datetime.now(UTC) - timedelta(seconds=60)
    assert store.stored_response("resp_new", tenant, kept_since=cutoff) is None
