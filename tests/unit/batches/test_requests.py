"""Batch input files are checked line by line."""

from __future__ import annotations

import json

from aifactory.batches.requests import check_input


def _line(custom_id: str = "a", url: str = "/v1/chat/completions", model: str = "m") -> bytes:
    record = {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": model}}
    return json.dumps(record).encode() + b"\n"


def test_a_valid_file_is_summarized() -> None:
    checked = check_input(_line("a") + _line("b"), max_lines=10)
    assert checked.summary is not None and checked.errors == []
    assert (checked.summary.lines, checked.summary.url, checked.summary.model) == (
        2,
        "/v1/chat/completions",
        "m",
    )


def test_every_bad_line_is_named() -> None:
    data = _line("a") + b"{oops\n" + _line("a") + _line("c", model="other") + b"[1]\n"
    checked = check_input(data, max_lines=10)
    assert checked.summary is None
    assert [e.line for e in checked.errors] == [2, 3, 4, 5]
    message = checked.message()
    assert "line 2: not valid JSON" in message
    assert "line 3: custom_id 'a' appears twice (first on line 1)" in message
    assert "line 4: model 'other' differs from 'm'" in message
    assert "line 5: must be a JSON object" in message


def test_mixed_endpoints_streams_and_unknown_fields_are_refused() -> None:
    streamed = json.dumps(
        {
            "custom_id": "s",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "m", "stream": True},
        }
    ).encode()
    extra = json.dumps(
        {"custom_id": "x", "method": "POST", "url": "/v1/completions", "body": {}, "x": 1}
    ).encode()
    data = _line("a") + _line("b", url="/v1/embeddings") + streamed + b"\n" + extra + b"\n"
    messages = [str(e) for e in check_input(data, max_lines=10).errors]
    assert messages == [
        "line 2: url '/v1/embeddings' differs from '/v1/chat/completions'",
        "line 3: a batch request cannot stream",
        "line 4: unknown field 'x'",
    ]


def test_too_many_lines_empty_files_and_non_utf8_are_refused() -> None:
    assert "at most 2 requests" in check_input(_line("a") + _line("b") + _line("c"), 2).message()
    assert "holds no requests" in check_input(b"\n\n", 2).message()
    assert "not UTF-8" in check_input(b"\xff\xfe", 2).message()
