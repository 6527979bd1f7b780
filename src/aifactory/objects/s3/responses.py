"""S3 XML documents out (listings, results, errors) and in (parsed request bodies).

Documents are built as text with escaping: they are small and flat, and this
is several times cheaper than building element trees. This module is the one
place that turns an ``S3Error`` into an error document.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import quote
from xml.sax.saxutils import escape

from starlette.types import Send

from aifactory.objects.errors import S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_XML_BODY_BYTES = 2 * 1024 * 1024


# XML 1.0 cannot carry most control characters, not even as references.
_NOT_XML = {c: "\ufffd" for c in range(0x20) if chr(c) not in "\t\n\r"}


def element(name: str, value: object) -> str:
    """``<name>value</name>`` with the value escaped (control characters replaced)."""
    return f"<{name}>{escape(str(value)).translate(_NOT_XML)}</{name}>"


def document(root: str, inner: Iterable[str]) -> bytes:
    """A whole XML document with the S3 namespace."""
    return f'{XML_HEADER}<{root} xmlns="{NAMESPACE}">{"".join(inner)}</{root}>'.encode()


def iso_time(timestamp: float) -> str:
    """ISO 8601 with milliseconds, as S3 listings show times."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def http_time(timestamp: float) -> str:
    """RFC 7231 date (``Last-Modified``)."""
    return formatdate(timestamp, usegmt=True)


def url_encoder(encoding_type: str) -> Callable[[str], str]:
    """The identity, or URL encoding for ``encoding-type=url``."""
    if encoding_type == "url":
        return lambda text: quote(text, safe="/")
    if encoding_type:
        raise S3Error("InvalidArgument", "encoding-type must be 'url'.")
    return lambda text: text


def error_document(error: S3Error, request_id: str) -> bytes:
    """The XML error document of ``error``."""
    message = f"{error.message} {error.fix}".strip() if error.fix else error.message
    return (
        f"{XML_HEADER}<Error>{element('Code', error.code)}{element('Message', message)}"
        f"{element('Resource', error.resource)}{element('RequestId', request_id)}</Error>"
    ).encode()


async def send_xml(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Send an XML response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *headers,
                (b"content-type", b"application/xml"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_empty(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], length: int = 0
) -> None:
    """Send a response without a body (``length`` is the Content-Length to declare)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(length).encode())],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def send_error(
    send: Send, error: S3Error, request_id: str, headers: list[tuple[bytes, bytes]], head: bool
) -> None:
    """Send ``error`` as an S3 error document (HEAD: status and headers only)."""
    if head:
        await send_empty(send, error.status_code, headers)
    else:
        await send_xml(send, error.status_code, error_document(error, request_id), headers)


def parse_xml(body: bytes) -> ET.Element:
    """A request body's XML tree with namespaces stripped from tag names.

    Raises:
        S3Error: MalformedXML.
    """
    if len(body) > MAX_XML_BODY_BYTES:
        raise S3Error("MalformedXML", "The XML body is too large.")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise S3Error("MalformedXML", f"The XML body is not well-formed: {exc}.") from None
    for node in root.iter():
        node.tag = node.tag.rpartition("}")[2]
    return root


def child_text(node: ET.Element, name: str) -> str:
    """The text of a direct child, or ``""``."""
    child = node.find(name)
    return (child.text or "") if child is not None else ""
