"""The policy document of a browser form upload (POST Object): parsed, signed, checked.

A form carries a base64 JSON policy that its signer wrote::

    {"expiration": "2026-12-07T12:00:00Z",
     "conditions": [{"bucket": "b"}, ["starts-with", "$key", "user/"],
                    ["content-length-range", 0, 1048576], {"x-amz-date": "…"}, …]}

and its signature over that base64 text: SigV4 (``x-amz-signature``, hex
HMAC with the day's signing key) or SigV2 (``signature``, base64 HMAC-SHA1
with the secret). Every form field but the signature, the policy, the file,
checksums and ``x-ignore-*`` fields must be named by a condition, and every
condition must hold; S3 answers a broken policy 400 InvalidPolicyDocument and
a policy the form does not satisfy 403 AccessDenied, saying which condition.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aifactory.objects.errors import S3Error
from aifactory.objects.s3 import sigv4

# Fields no condition needs to name: what signs the form, the file, and integrity checks.
EXEMPT_FIELDS = frozenset(
    {"policy", "signature", "x-amz-signature", "awsaccesskeyid", "file", "x-amz-security-token"}
)
_EXPIRATION = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?Z")
_OPERATORS = ("eq", "starts-with")


@dataclass(frozen=True)
class Condition:
    """One condition on a form field: ``eq`` or ``starts-with`` a value."""

    operator: str
    field: str
    value: str

    def holds(self, actual: str) -> bool:
        """Whether the field's value satisfies the condition."""
        if self.operator == "eq":
            return actual == self.value
        # Content-Type may list several types; each must start with the prefix.
        values = actual.split(",") if self.field == "content-type" else [actual]
        return all(value.strip().startswith(self.value) for value in values)

    def __str__(self) -> str:
        return f'["{self.operator}", "${self.field}", "{self.value}"]'


@dataclass(frozen=True)
class PostPolicy:
    """A parsed policy document."""

    expiration: datetime
    conditions: tuple[Condition, ...]
    min_length: int = 0
    max_length: int | None = None

    def check(self, fields: dict[str, str], now: datetime) -> None:
        """Raise unless the form's fields (lower-case names) satisfy the policy.

        Raises:
            S3Error: AccessDenied, saying which condition failed or which field
                no condition names.
        """
        if now >= self.expiration:
            raise _denied("Invalid according to Policy: Policy expired.")
        for condition in self.conditions:
            if not condition.holds(fields.get(condition.field, "")):
                raise _denied(f"Invalid according to Policy: Policy Condition failed: {condition}")
        named = {condition.field for condition in self.conditions}
        extra = sorted(
            name
            for name in fields
            if name not in named
            and name not in EXEMPT_FIELDS
            and not name.startswith(("x-ignore-", "x-amz-checksum-"))
        )
        if extra:
            raise _denied(f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")

    def check_length(self, size: int, complete: bool) -> None:
        """Raise unless ``size`` is within the policy's content-length-range.

        While the file streams in (not ``complete``) only the maximum applies.

        Raises:
            S3Error: EntityTooLarge or EntityTooSmall.
        """
        if self.max_length is not None and size > self.max_length:
            raise S3Error(
                "EntityTooLarge",
                f"The file is larger than the policy's {self.max_length} bytes.",
            )
        if complete and size < self.min_length:
            raise S3Error(
                "EntityTooSmall",
                f"The file is smaller than the policy's {self.min_length} bytes.",
            )


def parse_policy(encoded: str) -> PostPolicy:
    """Decode and parse a base64 policy document.

    Raises:
        S3Error: InvalidPolicyDocument, with the reason.
    """
    try:
        document = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise _invalid("the policy is not base64-encoded JSON.") from None
    if not isinstance(document, dict):
        raise _invalid("the policy is not a JSON object.")
    expiration = document.get("expiration")
    if not isinstance(expiration, str):
        raise _invalid("Policy missing expiration.")
    matched = _EXPIRATION.fullmatch(expiration)
    if matched is None:
        raise _invalid(
            f"Invalid 'expiration' value: {expiration[:40]!r} (want 2026-12-31T12:00:00Z)."
        )
    try:
        expires = datetime.strptime(matched[1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise _invalid(f"Invalid 'expiration' value: {expiration[:40]!r}.") from None
    conditions = document.get("conditions")
    if not isinstance(conditions, list):
        raise _invalid("Policy missing conditions.")
    parsed: list[Condition] = []
    lengths: tuple[int, int | None] = (0, None)
    for item in conditions:
        if isinstance(item, list) and item and str(item[0]).lower() == "content-length-range":
            lengths = _length_range(item)
        else:
            parsed.append(_condition(item))
    return PostPolicy(expires, tuple(parsed), lengths[0], lengths[1])


def _condition(item: Any) -> Condition:
    if isinstance(item, dict):
        if len(item) != 1:
            raise _invalid(f"a condition object must name exactly one field: {item!r:.80}.")
        ((name, value),) = item.items()
        if not isinstance(value, str):
            raise _invalid(f"the value of {name!r:.40} must be a string.")
        return Condition("eq", str(name).lower().removeprefix("$"), value)
    if isinstance(item, list) and len(item) == 3 and all(isinstance(v, str) for v in item):
        operator, name, value = item[0].lower(), item[1], item[2]
        if operator not in _OPERATORS or not name.startswith("$"):
            raise _invalid(f"unknown condition {item!r:.80}.")
        return Condition(operator, name[1:].lower(), value)
    raise _invalid(f"unknown condition {item!r:.80}.")


def _length_range(item: list[Any]) -> tuple[int, int]:
    if len(item) != 3:
        raise _invalid("content-length-range takes a minimum and a maximum.")
    try:
        low, high = int(item[1]), int(item[2])
    except (TypeError, ValueError):
        raise _invalid("content-length-range bounds must be whole numbers.") from None
    if low < 0 or high < low:
        raise _invalid("content-length-range must be 0 <= minimum <= maximum.")
    return low, high


def v4_signature(secret: str, credential: sigv4.Credential, policy: str) -> str:
    """The hex SigV4 signature of a base64 policy."""
    key = sigv4.signing_key(secret, credential.day, credential.region, credential.service)
    return sigv4.sign(key, policy)


def v2_signature(secret: str, policy: str) -> str:
    """The base64 SigV2 (HMAC-SHA1) signature of a base64 policy."""
    digest = hmac.digest(secret.encode(), policy.encode(), hashlib.sha1)
    return base64.b64encode(digest).decode()


def encode_policy(expiration: datetime, conditions: list[Any]) -> str:
    """A base64 policy document (what the upload-form route signs)."""
    document = {"expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"), "conditions": conditions}
    return base64.b64encode(json.dumps(document).encode()).decode()


def _invalid(why: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {why}")


def _denied(why: str) -> S3Error:
    return S3Error("AccessDenied", why)
