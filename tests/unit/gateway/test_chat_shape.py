import pytest

from aifactory.errors import BadRequest
from aifactory.gateway.chat_shape import check_chat

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": 3, "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": {}, "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role"),
        ({"messages": [USER, {"role": "user", "content": {"a": 1}}]}, "messages[1].content"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages[0].content[0].text",
        ),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": {"id": 1}}]},
            "messages[0].tool_calls",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]},
            "messages[0].tool_calls[0].function",
        ),
        ({"messages": [USER], "tools": {"type": "function"}}, "tools"),
        ({"messages": [USER], "tools": [{"type": "function"}]}, "tools[0].function"),
        ({"messages": [USER], "tools": [{"type": "retrieval"}]}, "tools[0]"),
    ],
)
def test_a_malformed_chat_is_a_400_naming_its_parameter(payload: dict, param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check_chat(payload, text_only=False)
    assert refused.value.param == param


def test_media_parts_are_refused_only_by_a_text_only_model() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
    payload = {"messages": [{"role": "user", "content": [{"type": "text", "text": "?"}, image]}]}
    check_chat(payload, text_only=False)
    with pytest.raises(BadRequest, match="text only") as refused:
        check_chat(payload, text_only=True)
    assert refused.value.param == "messages[0].content[1].type"


def test_what_openai_takes_passes() -> None:
    tool = {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}
    call = {"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}
    check_chat(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                USER,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
            ],
            "tools": [tool],
        },
        text_only=True,
    )
