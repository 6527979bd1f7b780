r"""The legacy AWS Signature Version 2, query form (``AWSAccessKeyId``, ``Expires``, ``Signature``).

boto3's ``generate_presigned_url`` still produces it for custom endpoints
unless ``signature_version="s3v4"`` is set, so presigned links need it::

    string to sign = METHOD \n Content-MD5 \n Content-Type \n Expires \n
                     x-amz-* headers (name:value\n, sorted) + /bucket/key[?subresources]
    signature      = base64 HMAC-SHA1(secret, string to sign)
"""

from __future__ import annotations

import base64
import hashlib
import hmac

# Query parameters that are part of the signed resource, as in botocore's HmacV1Auth.
SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging",
        "partNumber", "policy", "requestPayment", "torrent", "versioning",
        "versionId", "versions", "website", "uploads", "uploadId",
        "response-content-type", "response-content-language", "response-expires",
        "response-cache-control", "response-content-disposition",
        "response-content-encoding", "delete", "lifecycle", "tagging", "restore",
        "storageClass", "notification", "replication", "analytics", "metrics",
        "inventory", "select", "select-type", "object-lock",
    }
)  # fmt: skip


def canonical_resource(resource_path: str, query: list[tuple[str, str]]) -> str:
    """``/bucket/key`` (as sent, percent-encoded) plus the sorted signed subresources."""
    signed = sorted((name, value) for name, value in query if name in SUBRESOURCES)
    if not signed:
        return resource_path
    parts = [f"{name}={value}" if value else name for name, value in signed]
    return resource_path + "?" + "&".join(parts)


def string_to_sign(
    method: str,
    headers: dict[str, list[str]],
    expires: str,
    resource: str,
) -> str:
    """The string a SigV2 query signature covers."""
    amz = sorted(
        (name, ",".join(values)) for name, values in headers.items() if name.startswith("x-amz-")
    )
    amz_lines = "".join(f"{name}:{value}\n" for name, value in amz)
    content_md5 = ",".join(headers.get("content-md5", []))
    content_type = ",".join(headers.get("content-type", []))
    return f"{method}\n{content_md5}\n{content_type}\n{expires}\n{amz_lines}{resource}"


def signature(secret: str, text: str) -> str:
    """Base64 HMAC-SHA1 of ``text``."""
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
