import json
import logging
from collections.abc import Iterator

import pytest

from aifactory.logs import JsonFormatter, RequestIdFilter, configure_logging
from aifactory.request_ids import REQUEST_ID


def record(message: str = "replica %s ready", *args: object) -> logging.LogRecord:
    made = logging.LogRecord(
        "aifactory.x", logging.INFO, __file__, 1, message, args or ("r1",), None
    )
    RequestIdFilter().filter(made)
    return made


def test_json_lines_carry_the_request_id() -> None:
    token = REQUEST_ID.set("req-7")
    try:
        line = JsonFormatter().format(record())
    finally:
        REQUEST_ID.reset(token)
    document = json.loads(line)
    assert document["request_id"] == "req-7"
    assert document["message"] == "replica r1 ready"
    assert document["level"] == "info" and document["logger"] == "aifactory.x"


def test_outside_a_request_the_id_is_a_dash() -> None:
    assert json.loads(JsonFormatter().format(record()))["request_id"] == "-"


@pytest.fixture
def restored_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restored_root_logger")
def test_configure_logging_writes_the_chosen_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    logging.getLogger("aifactory.test").info("hello %d", 1)
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["message"] == "hello 1"
    configure_logging("info", "text")
    token = REQUEST_ID.set("req-9")
    try:
        logging.getLogger("aifactory.test").warning("careful")
    finally:
        REQUEST_ID.reset(token)
    assert "WARNING aifactory.test [req-9]: careful" in capsys.readouterr().err
