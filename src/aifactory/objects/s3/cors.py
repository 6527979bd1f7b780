"""A bucket's CORS configuration: the rules, their XML, and which rule answers a request.

::

    <CORSConfiguration><CORSRule>
      <AllowedOrigin>https://*.example.org</AllowedOrigin>   one '*' wildcard at most
      <AllowedMethod>GET</AllowedMethod>                     GET PUT POST DELETE HEAD
      <AllowedHeader>x-amz-*</AllowedHeader>                 what a preflight may ask for
      <ExposeHeader>ETag</ExposeHeader>                      what scripts may read
      <MaxAgeSeconds>3000</MaxAgeSeconds>
    </CORSRule>…</CORSConfiguration>

The first rule that allows the origin, the method and every requested
header answers, as S3 does; origins and headers match case-insensitively
for headers, case-sensitively for origins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from aifactory.objects.errors import S3Error
from aifactory.objects.s3.responses import child_text, document, element, parse_xml

MAX_RULES = 100
METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")


@dataclass(frozen=True)
class CorsRule:
    """One ``CORSRule``."""

    origins: tuple[str, ...]
    methods: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    rule_id: str = ""

    def allows(self, origin: str, method: str, headers: list[str]) -> bool:
        """Whether this rule lets ``origin`` send ``method`` with ``headers`` (lower case)."""
        return (
            method in self.methods
            and any(_pattern(allowed, False).fullmatch(origin) for allowed in self.origins)
            and all(
                any(_pattern(allowed, True).fullmatch(header) for allowed in self.allowed_headers)
                for header in headers
            )
        )

    def response_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        """The CORS headers of a response this rule allows (actual requests)."""
        wildcard = "*" in self.origins
        headers = [
            (b"access-control-allow-origin", b"*" if wildcard else origin.encode()),
            (b"access-control-allow-methods", ", ".join(self.methods).encode()),
        ]
        if not wildcard:
            headers.append((b"vary", b"Origin"))
        if self.expose_headers:
            headers.append(
                (b"access-control-expose-headers", ", ".join(self.expose_headers).encode())
            )
        return headers

    def preflight_headers(self, origin: str, requested: list[str]) -> list[tuple[bytes, bytes]]:
        """The headers of a preflight (OPTIONS) answer this rule allows."""
        headers = self.response_headers(origin)
        if requested:
            headers.append((b"access-control-allow-headers", ", ".join(requested).encode()))
        if self.max_age is not None:
            headers.append((b"access-control-max-age", str(self.max_age).encode()))
        return headers


@lru_cache(maxsize=4096)
def _pattern(allowed: str, ignore_case: bool) -> re.Pattern[str]:
    text = ".*".join(re.escape(part) for part in allowed.split("*"))
    return re.compile(text, re.IGNORECASE if ignore_case else 0)


def matching_rule(
    rules: tuple[CorsRule, ...], origin: str, method: str, headers: list[str]
) -> CorsRule | None:
    """The first rule that allows the request; None: CORS refuses it."""
    for rule in rules:
        if rule.allows(origin, method, headers):
            return rule
    return None


def requested_headers(value: str) -> list[str]:
    """The lower-case names an ``Access-Control-Request-Headers`` value lists."""
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def parse_configuration(body: bytes) -> tuple[CorsRule, ...]:
    """The rules of a ``CORSConfiguration`` document.

    Raises:
        S3Error: MalformedXML, or InvalidRequest for a rule S3 would refuse.
    """
    root = parse_xml(body)
    if root.tag != "CORSConfiguration":
        raise S3Error("MalformedXML", "The root element must be CORSConfiguration.")
    rules = []
    for node in root.findall("CORSRule"):
        origins = tuple(o.text or "" for o in node.findall("AllowedOrigin"))
        methods = tuple(m.text or "" for m in node.findall("AllowedMethod"))
        if not origins or not methods:
            raise S3Error("MalformedXML", "Every CORSRule needs AllowedOrigin and AllowedMethod.")
        for method in methods:
            if method not in METHODS:
                raise S3Error(
                    "InvalidRequest",
                    f"Found unsupported HTTP method in CORS config. Unsupported method is {method}",
                )
        for origin in origins:
            if origin.count("*") > 1:
                raise S3Error(
                    "InvalidRequest",
                    f'AllowedOrigin "{origin}" can not have more than one wildcard.',
                )
        max_age_text = child_text(node, "MaxAgeSeconds")
        try:
            max_age = int(max_age_text) if max_age_text else None
        except ValueError:
            raise S3Error("MalformedXML", "MaxAgeSeconds must be a whole number.") from None
        rules.append(
            CorsRule(
                origins,
                methods,
                tuple((h.text or "").lower() for h in node.findall("AllowedHeader")),
                tuple(h.text or "" for h in node.findall("ExposeHeader")),
                max_age,
                child_text(node, "ID"),
            )
        )
    if not rules or len(rules) > MAX_RULES:
        raise S3Error("MalformedXML", f"A CORS configuration holds 1 to {MAX_RULES} CORSRules.")
    return tuple(rules)


def configuration_document(rules: tuple[CorsRule, ...]) -> bytes:
    """The ``CORSConfiguration`` document GetBucketCors answers."""
    parts = []
    for rule in rules:
        inner = [element("ID", rule.rule_id)] if rule.rule_id else []
        inner += [element("AllowedOrigin", o) for o in rule.origins]
        inner += [element("AllowedMethod", m) for m in rule.methods]
        inner += [element("AllowedHeader", h) for h in rule.allowed_headers]
        inner += [element("ExposeHeader", h) for h in rule.expose_headers]
        if rule.max_age is not None:
            inner.append(element("MaxAgeSeconds", rule.max_age))
        parts.append(f"<CORSRule>{''.join(inner)}</CORSRule>")
    return document("CORSConfiguration", parts)
