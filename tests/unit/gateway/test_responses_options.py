import pytest

from aifactory.errors import BadRequest
from aifactory.gateway.responses_bridge import chat_request
from aifactory.gateway.responses_inputs import input_items, input_items_page
from aifactory.gateway.responses_options import CHARS_PER_TOKEN, fit_to_context, truncated


def _turn(text: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]


def test_truncation_drops_whole_oldest_turns_and_keeps_system_and_the_last() -> None:
    big = "x" * (100 * CHARS_PER_TOKEN)
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}
    messages = [
        {"role": "system", "content": "rules"},
        *_turn(big),
        {"role": "user", "content": big},
        call,
        {"role": "tool", "tool_call_id": "c", "content": "42"},
        {"role": "user", "content": "now?"},
    ]
    kept = truncated(messages, context_tokens=250, reserved_tokens=0)
    # The first turn went; the second (with its tool call and output) fits, so it stays.
    assert kept == [messages[0], *messages[3:]]
    assert truncated(messages, context_tokens=60, reserved_tokens=0) == [
        messages[0],
        messages[-1],
    ]
    # What cannot fit even alone is left for the engine to refuse.
    assert truncated([{"role": "user", "content": big}], 10, 0) == [
        {"role": "user", "content": big}
    ]


def test_fit_to_context_reserves_the_answer_and_skips_unknown_contexts() -> None:
    chat = {"messages": [*_turn("a" * 40), {"role": "user", "content": "b"}], "max_tokens": 30}
    fit_to_context(chat, None)
    assert len(chat["messages"]) == 3
    fit_to_context(chat, 40)  # 10 tokens left for the prompt: only the last turn fits
    assert chat["messages"] == [{"role": "user", "content": "b"}]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"background": True}, "background"),
        ({"truncation": "never"}, "truncation"),
        ({"include": "message.output_text.logprobs"}, "include"),
        ({"include": ["reasoning.encrypted_content", "x"]}, "include[1]"),
    ],
)
def test_options_not_served_name_their_param(extra: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        chat_request({"model": "m", "input": "hi", **extra}, [])
    assert caught.value.param == param


def test_include_logprobs_asks_the_engine_for_them() -> None:
    chat, _ = chat_request(
        {
            "model": "m",
            "input": "hi",
            "include": ["message.output_text.logprobs"],
            "top_logprobs": 3,
            "background": False,
            "truncation": "disabled",
        },
        [],
    )
    assert chat["logprobs"] is True and chat["top_logprobs"] == 3


def test_input_items_get_ids_and_openais_spelling() -> None:
    items = input_items(
        {
            "input": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"type": "function_call_output", "call_id": "c", "output": "1"},
            ]
        }
    )
    assert items[0]["content"] == [{"type": "input_text", "text": "a"}]
    assert items[1]["content"] == [{"type": "output_text", "text": "b"}]
    assert items[2]["type"] == "function_call_output" and items[2]["id"].startswith("fco_")
    assert [i["type"] for i in input_items({"input": "hi"})] == ["message"]


def test_input_items_page_orders_limits_and_continues_after() -> None:
    items = [{"id": f"i{n}"} for n in range(5)]
    page = input_items_page(items, b"")
    assert [i["id"] for i in page["data"]] == ["i4", "i3", "i2", "i1", "i0"]
    first = input_items_page(items, b"order=asc&limit=2")
    assert (first["first_id"], first["last_id"], first["has_more"]) == ("i0", "i1", True)
    rest = input_items_page(items, b"order=asc&limit=10&after=i1")
    assert [i["id"] for i in rest["data"]] == ["i2", "i3", "i4"] and not rest["has_more"]
    assert input_items_page(items, b"after=nope")["data"] == []
    for query, param in ((b"limit=101", "limit"), (b"limit=x", "limit"), (b"order=up", "order")):
        with pytest.raises(BadRequest) as caught:
            input_items_page(items, query)
        assert caught.value.param == param
