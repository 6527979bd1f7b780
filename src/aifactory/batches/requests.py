"""The lines of a batch input file, checked one by one (a pure function of the bytes).

Each line is one request, as OpenAI's Batch API takes it::

    {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "chat", "messages": [...], "max_tokens": 16}}

Every line must name the same endpoint and model (a batch runs one model's
engine), and no ``custom_id`` may repeat: it is what output lines are matched
by, and what a resumed shard skips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")

# Of a refused file, this many bad lines are named in the error.
_NAMED_ERRORS = 5
_MAX_CUSTOM_ID = 512


@dataclass(frozen=True)
class LineError:
    """Why one line (1-based) of an input file is refused."""

    line: int
    message: str
    param: str = ""

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class InputSummary:
    """What a valid input file asks for: how many requests, to which endpoint and model."""

    lines: int
    url: str
    model: str


@dataclass
class InputCheck:
    """The outcome of checking a file: its summary, or the lines that are wrong."""

    summary: InputSummary | None
    errors: list[LineError] = field(default_factory=list)

    def message(self) -> str:
        """The first few errors, one sentence (for an OpenAI error's ``message``)."""
        named = "; ".join(str(e) for e in self.errors[:_NAMED_ERRORS])
        more = len(self.errors) - _NAMED_ERRORS
        return f"{named}{f'; and {more} more' if more > 0 else ''}"


def check_input(data: bytes, max_lines: int) -> InputCheck:
    """Check every line of a batch input file; blank lines at the end are allowed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InputCheck(None, [LineError(1, f"the file is not UTF-8 text ({exc.reason})")])
    lines = text.rstrip("\n").split("\n") if text.strip() else []
    if not lines:
        return InputCheck(None, [LineError(1, "the file holds no requests")])
    if len(lines) > max_lines:
        return InputCheck(
            None, [LineError(max_lines + 1, f"a batch takes at most {max_lines} requests")]
        )
    errors: list[LineError] = []
    first_of: dict[str, int] = {}
    url = model = ""
    for number, line in enumerate(lines, start=1):
        request, error = _request(number, line)
        if error is not None:
            errors.append(error)
            continue
        assert request is not None
        custom_id, line_url, line_model = request
        if custom_id in first_of:
            errors.append(
                LineError(
                    number,
                    f"custom_id {custom_id!r} appears twice (first on line {first_of[custom_id]})",
                    "custom_id",
                )
            )
            continue
        first_of[custom_id] = number
        url, model = url or line_url, model or line_model
        if line_url != url:
            errors.append(LineError(number, f"url {line_url!r} differs from {url!r}", "url"))
        elif line_model != model:
            errors.append(
                LineError(number, f"model {line_model!r} differs from {model!r}", "body.model")
            )
    if errors:
        return InputCheck(None, errors)
    return InputCheck(InputSummary(len(lines), url, model))


def _request(number: int, line: str) -> tuple[tuple[str, str, str] | None, LineError | None]:
    """``(custom_id, url, model)`` of a well-formed line, else the error."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, LineError(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(value, dict):
        return None, LineError(number, "must be a JSON object")
    extra = sorted(set(value) - {"custom_id", "method", "url", "body"})
    if extra:
        return None, LineError(number, f"unknown field {extra[0]!r}", extra[0])
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > _MAX_CUSTOM_ID:
        return None, LineError(
            number, f"custom_id must be a string of 1 to {_MAX_CUSTOM_ID} characters", "custom_id"
        )
    if value.get("method") != "POST":
        return None, LineError(number, "method must be 'POST'", "method")
    url = value.get("url")
    if url not in ENDPOINTS:
        return None, LineError(number, f"url must be one of {', '.join(ENDPOINTS)}", "url")
    body = value.get("body")
    if not isinstance(body, dict):
        return None, LineError(number, "body must be a JSON object", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return None, LineError(number, "body.model must name a model", "body.model")
    if body.get("stream"):
        return None, LineError(number, "a batch request cannot stream", "body.stream")
    return (custom_id, url, model), None
