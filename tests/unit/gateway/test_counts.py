import pytest

from aifactory.errors import BadRequest
from aifactory.gateway.counts import check_counts


@pytest.mark.parametrize(
    ("endpoint", "payload", "param"),
    [
        ("chat", {"n": 0}, "n"),
        ("chat", {"n": 129}, "n"),
        ("completions", {"n": 1.5}, "n"),
        ("chat", {"max_tokens": 0}, "max_tokens"),
        ("chat", {"max_completion_tokens": -1}, "max_completion_tokens"),
        ("chat", {"max_tokens": False}, "max_tokens"),
        ("completions", {"max_tokens": -1}, "max_tokens"),
    ],
)
def test_out_of_range_counts_name_their_param(
    endpoint: str, payload: dict[str, object], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        check_counts(endpoint, payload)
    assert caught.value.param == param


def test_counts_in_range_and_absent_pass() -> None:
    check_counts("chat", {"n": 128, "max_tokens": 1, "max_completion_tokens": 5})
    check_counts("completions", {"n": 1, "max_tokens": 0})
    check_counts("chat", {})
    check_counts("embeddings", {"max_tokens": -1})
