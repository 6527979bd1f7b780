import json

from aifactory.gateway.engine_errors import openai_error


def _error(status: int, body: bytes) -> dict[str, object]:
    return dict(json.loads(openai_error(status, body))["error"])


def test_llamacpps_field_error_names_the_param_and_keeps_the_message() -> None:
    message = "Field 'max_tokens': Value must be between -1"
    error = {"code": 400, "message": message, "type": "invalid_request_error"}
    body = json.dumps({"error": error}).encode()
    assert _error(400, body) == {
        "message": "Field 'max_tokens': Value must be between -1",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": None,
    }


def test_llamacpps_context_overflow_is_context_length_exceeded() -> None:
    body = b'{"error":{"code":400,"message":"request exceeds","type":"exceed_context_size_error"}}'
    error = _error(400, body)
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")


def test_an_openai_shaped_error_is_kept() -> None:
    body = b'{"error":{"message":"no","type":"invalid_request_error","param":"n","code":"bad"}}'
    assert _error(400, body) == {
        "message": "no",
        "type": "invalid_request_error",
        "param": "n",
        "code": "bad",
    }


def test_a_body_that_is_not_json_becomes_the_message() -> None:
    error = _error(500, b"Internal Server Error")
    assert error == {
        "message": "Internal Server Error",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_vllms_detail_is_the_message() -> None:
    assert _error(422, b'{"detail":"bad field"}')["message"] == "bad field"
