"""One S3 request as the handlers see it: bucket, key, query and headers, decoded once."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from starlette.types import Scope

from aifactory.objects.errors import S3Error


@dataclass
class S3Request:
    """The parts of an HTTP request that S3 semantics and signatures need.

    ``path`` is the decoded path as the client addressed it (``/bucket/key``
    path-style, ``/key`` virtual-host style); ``raw_path`` is as sent.
    """

    method: str
    raw_path: str
    path: str
    bucket: str
    key: str
    query: list[tuple[str, str]]
    headers: dict[str, list[str]]
    virtual_host: bool
    request_id: str
    params: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.params = dict(self.query)

    def header(self, name: str, default: str = "") -> str:
        """The (first) value of a lower-case header name."""
        values = self.headers.get(name)
        return values[0] if values else default

    @property
    def resource(self) -> str:
        """``/bucket/key`` whatever the addressing style (for error documents)."""
        return f"/{self.bucket}/{self.key}" if self.key else f"/{self.bucket}"


def parse_request(scope: Scope, domain: str, request_id: str) -> S3Request:
    """Decode an ASGI scope into an S3Request.

    Args:
        scope: The ASGI HTTP scope.
        domain: The virtual-host domain (``s3.example.org``), or ``""`` for path style only.
        request_id: This request's id.

    Raises:
        S3Error: InvalidArgument when the path is not valid UTF-8 once decoded.
    """
    headers: dict[str, list[str]] = {}
    for raw_name, raw_value in scope["headers"]:
        headers.setdefault(raw_name.decode("latin-1"), []).append(raw_value.decode("latin-1"))
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    raw_path = raw_path.partition("?")[0]
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", "The request path is not valid UTF-8.") from None
    query = _parse_query(scope.get("query_string", b""))
    host = headers.get("host", [""])[0].rsplit(":", 1)[0].lower()
    virtual_host = bool(domain) and host.endswith("." + domain)
    if virtual_host:
        bucket, key = host[: -len(domain) - 1], path[1:]
    else:
        bucket, _, key = path[1:].partition("/")
    return S3Request(
        scope["method"], raw_path, path, bucket, key, query, headers, virtual_host, request_id
    )


def _parse_query(query_string: bytes) -> list[tuple[str, str]]:
    pairs = []
    for item in query_string.decode("latin-1").split("&"):
        if item:
            name, _, value = item.partition("=")
            pairs.append((_unquote(name), _unquote(value)))
    return pairs


def _unquote(text: str) -> str:
    """A decoded query name or value; S3 refuses one that is not UTF-8 once decoded."""
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error(
            "InvalidArgument", "A query parameter is not valid UTF-8 once decoded."
        ) from None
