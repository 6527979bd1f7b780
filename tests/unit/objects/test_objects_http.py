"""Ranges and conditional headers of GetObject, as pure functions."""

import pytest

from aifactory.objects import S3Error
from aifactory.objects.s3.object_ops import check_conditions, parse_range

MTIME = 1_700_000_000.5  # Tue, 14 Nov 2023 22:13:20 GMT
BEFORE, AT, AFTER = (
    "Tue, 14 Nov 2023 22:13:19 GMT",
    "Tue, 14 Nov 2023 22:13:20 GMT",
    "Tue, 14 Nov 2023 22:13:21 GMT",
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=90-500", (90, 99)),
        ("", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=9-2", None),
    ],
)
def test_ranges(header: str, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges_are_416(header: str) -> None:
    with pytest.raises(S3Error) as caught:
        parse_range(header, 100)
    assert (
        caught.value.status_code == 416 and caught.value.headers["content-range"] == "bytes */100"
    )


def _conditions(**headers: str) -> bool:
    return check_conditions(
        '"abc"',
        MTIME,
        headers.get("if_match", ""),
        headers.get("if_none_match", ""),
        headers.get("if_modified_since", ""),
        headers.get("if_unmodified_since", ""),
    )


def test_conditions() -> None:
    assert _conditions() is False
    assert _conditions(if_match='"abc"') is False
    assert _conditions(if_none_match='"abc"') is True
    assert _conditions(if_none_match='"zzz"') is False
    assert _conditions(if_modified_since=AT) is True
    assert _conditions(if_modified_since=BEFORE) is False
    assert _conditions(if_unmodified_since=AT) is False
    # If-Match wins over If-Unmodified-Since, If-None-Match over If-Modified-Since (RFC 7232).
    assert _conditions(if_match="*", if_unmodified_since=BEFORE) is False
    assert _conditions(if_none_match='"zzz"', if_modified_since=AFTER) is False


@pytest.mark.parametrize(
    "headers", [{"if_match": '"zzz"'}, {"if_unmodified_since": BEFORE}], ids=["if-match", "ius"]
)
def test_failed_preconditions_are_412(headers: dict[str, str]) -> None:
    with pytest.raises(S3Error) as caught:
        _conditions(**headers)
    assert caught.value.status_code == 412
