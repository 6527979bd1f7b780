"""Logging setup: one line per record, each naming the request it belongs to.

``text`` is for people (``... [request-id] logger: message``); ``json`` writes
one object per line for log shippers. Either way the request id is the one the
client saw in ``x-request-id``, so a complaint can be traced to its lines.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

from aifactory.request_ids import REQUEST_ID

LogFormat = Literal["text", "json"]
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served (``-`` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add ``record.request_id``; never drops a record."""
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, request_id, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON."""
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Send every logger's records to stderr in ``log_format``."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
