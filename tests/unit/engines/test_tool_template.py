"""The tool-offering chat template for ChatML models, and the GGUF metadata read that finds them."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from aifactory.engines.gguf_metadata import metadata_string
from aifactory.engines.llamacpp_server import build_params, parse_args
from aifactory.engines.tool_template import tool_calling_template

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n'}}{% endfor %}"
)


def _gguf(path: Path, template: str | None) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    # An array of strings before the template: the walk must step over it.
    writer.add_token_list(["<|im_start|>", "hello", "world"])
    writer.add_uint32("test.count", 7)
    if template is not None:
        writer.add_chat_template(template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_metadata_string_finds_the_chat_template(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "m.gguf", CHATML)
    assert metadata_string(path, "tokenizer.chat_template") == CHATML
    assert metadata_string(path, "general.architecture") == "llama"
    assert metadata_string(path, "test.count") is None  # not a string
    assert metadata_string(path, "absent") is None


def test_metadata_string_of_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "not.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(64))
    assert metadata_string(path, "tokenizer.chat_template") is None


def test_a_chatml_template_without_tools_is_wrapped_and_kept_for_plain_chat() -> None:
    template = tool_calling_template(CHATML)
    assert template is not None
    assert template.startswith("{%- if tools %}")
    assert template.endswith("{%- else %}" + CHATML + "{%- endif %}")
    assert "<tool_call>" in template


@pytest.mark.parametrize(
    "own",
    [
        None,
        "",
        "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }}{% endfor %}",
        CHATML.replace("{% for", "{% if tools %}{{ tools }}{% endif %}{% for"),
    ],
)
def test_other_templates_are_left_alone(own: str | None) -> None:
    assert tool_calling_template(own) is None


@pytest.mark.parametrize(
    ("extra", "offered"),
    [([], True), (["--no-tool-calls"], False), (["--chat-template", "chatml"], False)],
)
def test_the_runner_offers_tools_unless_told_otherwise(
    tmp_path: Path, extra: list[str], offered: bool
) -> None:
    model = _gguf(tmp_path / "m.gguf", CHATML)
    args = parse_args(["--model", str(model), "--port", "0", *extra])
    params = build_params(args, model)
    assert ("<tool_call>" in params.chat_template) is offered  # type: ignore[attr-defined]
