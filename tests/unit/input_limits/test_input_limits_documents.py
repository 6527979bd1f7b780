import json

import pytest
import yaml

from aifactory.errors import BadRequest
from aifactory.input_limits import (
    MAX_JSON_DEPTH,
    MAX_YAML_DEPTH,
    parse_json,
    parse_json_object,
    parse_yaml,
)

# JSON


def test_json_as_deep_as_the_limit_parses() -> None:
    depth = MAX_JSON_DEPTH
    assert parse_json("[" * depth + "]" * depth) is not None
    assert parse_json_object(b'{"model": "m", "messages": [{"role": "user"}]}')["model"] == "m"


@pytest.mark.parametrize("document", ["[" * 1000 + "]" * 1000, '{"a":' * 300 + "1" + "}" * 300])
def test_json_deeper_than_the_limit_is_a_400(document: str) -> None:
    with pytest.raises(BadRequest, match=f"nested more than {MAX_JSON_DEPTH} levels"):
        parse_json(document)


@pytest.mark.parametrize("document", [b"NaN", b'{"a": Infinity}', b"{", b"\xff", b"1" * 5000])
def test_what_is_not_json_is_a_400(document: bytes) -> None:
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_json(document)


def test_a_json_body_that_is_not_an_object_is_a_400() -> None:
    with pytest.raises(BadRequest, match="must be a JSON object"):
        parse_json_object(b"[1, 2]")


def test_json_parses_like_the_standard_library() -> None:
    document = '{"a": [1, 2.5, "\\u00e9", null, true], "b": {"c": -0}, "a2": 12345678901234567890}'
    assert parse_json(document) == json.loads(document)


# YAML


def test_yaml_parses_specs_with_anchors_but_no_aliases() -> None:
    assert parse_yaml("a: &x 1\nb: [0x10, -1_000, 2.5, yes, ~]\n") == {
        "a": 1,
        "b": [16, -1000, 2.5, True, None],
    }


def test_yaml_aliases_are_refused_with_their_line() -> None:
    with pytest.raises(yaml.YAMLError, match=r"alias \*a: YAML aliases are not accepted") as exc:
        parse_yaml("a: &a [x, x]\nb: [*a, *a]\n")
    assert "line 2" in str(exc.value)


def test_yaml_merge_keys_are_aliases_too() -> None:
    with pytest.raises(yaml.YAMLError, match="aliases are not accepted"):
        parse_yaml("base: &base {cpus: 1}\nresources:\n  <<: *base\n")


@pytest.mark.parametrize(
    "document",
    [
        "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1),
        "".join(" " * i + "a:\n" for i in range(MAX_YAML_DEPTH + 1)) + " " * 70 + "a: 1\n",
        "[" * 100_000,
    ],
    ids=["flow", "block", "unclosed"],
)
def test_yaml_deeper_than_the_limit_is_refused(document: str) -> None:
    with pytest.raises(yaml.YAMLError, match=f"nested more than {MAX_YAML_DEPTH} levels"):
        parse_yaml(document)


def test_yaml_as_deep_as_the_limit_parses() -> None:
    depth = MAX_YAML_DEPTH
    assert parse_yaml("[" * depth + "]" * depth) == parse_yaml("[" * depth + "]" * depth)


@pytest.mark.parametrize("integer", ["9" * 5000, "0x" + "f" * 100, "1:" * 40 + "1"])
def test_yaml_integers_longer_than_any_setting_are_refused(integer: str) -> None:
    with pytest.raises(yaml.YAMLError, match="at most 32 digits"):
        parse_yaml(f"replicas: {integer}\n")


def test_yaml_a_long_string_of_digits_in_quotes_is_a_string() -> None:
    assert parse_yaml(f"v: '{'9' * 5000}'\n") == {"v": "9" * 5000}


@pytest.mark.parametrize("text", ['name: "\\ud9bd\\udc5d"', 'command: ["\\udfff"]', '"\\ud800": x'])
def test_yaml_strings_with_lone_surrogates_are_refused(text: str) -> None:
    with pytest.raises(yaml.YAMLError, match="lone surrogate"):
        parse_yaml(text)
    assert parse_yaml('name: "caf\\u00e9 \\U0001F600"') == {"name": "café 😀"}
