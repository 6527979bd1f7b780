"""A request turned into a stream that ends with usage: spliced bytes, never a duplicate key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aifactory.gateway.app import _streamed_with_usage


def _keys_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _value in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys: {keys}"
    return dict(pairs)


@pytest.mark.parametrize(
    ("body", "spliced"),
    [
        (b'{"model": "m", "stream": true}', True),
        (b'{"model": "m", "messages": []}\n', True),
        (b'{"model": "m", "stream": false}', False),
        (b'{"model": "m", "stream": true, "stream_options": {"other": 1}}', False),
        (b'{"model": "m", "stream": 1}', False),
    ],
)
def test_the_body_asks_for_a_stream_with_usage_and_nothing_else_changes(
    body: bytes, spliced: bool
) -> None:
    payload = json.loads(body)
    out = _streamed_with_usage(body, dict(payload))
    document = json.loads(out, object_pairs_hook=_keys_once)
    assert document["stream"] is True
    assert document["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in document.items() if not k.startswith("stream")} == {
        k: v for k, v in payload.items() if not k.startswith("stream")
    }
    assert out.startswith(body.rstrip()[:-1]) is spliced
