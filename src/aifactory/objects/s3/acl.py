"""S3 ACLs as aifactory grants: grantees are tenants (canonical user id = tenant name).

One grant set serves a bucket (the store's ``grants``, which
``aifactory buckets share`` edits too) or an object (its metadata record),
as grantee -> level::

    tenant name                       read | write   (write includes read)
    ALL_USERS (the AllUsers group)    read           anyone, without a key
    AUTHENTICATED (AuthenticatedUsers) read          any tenant's key

A tenant's bucket grant reaches the bucket's objects too (as ``buckets
share`` always did, and as the POSIX ACLs on its tree do); a group's bucket
grant lists the bucket only, as on S3; an object grant reaches that object.
The owner's FULL_CONTROL is implicit: only the bucket's tenant (or an admin)
manages ACLs, so READ_ACP, WRITE_ACP and FULL_CONTROL for anyone
else are refused, and so is every write by a group (no anonymous writes).
Nothing asked is ever dropped silently: what cannot be honoured is refused
with the S3 error a client understands.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from xml.etree.ElementTree import Element

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.metadata import ALL_USERS
from aifactory.objects.s3.auth import Caller
from aifactory.objects.s3.request import S3Request
from aifactory.objects.s3.responses import document, element, parse_xml

AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
GROUPS = (ALL_USERS, AUTHENTICATED)
__all__ = [
    "ALL_USERS",
    "AUTHENTICATED",
    "GROUPS",
    "Grants",
    "from_headers",
    "from_xml",
    "policy_xml",
    "reads",
]
READ, WRITE = "read", "write"

Grants = dict[str, str]
TenantExists = Callable[[str], bool]

_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_CANNED: dict[str, Grants | None] = {
    "private": {},
    "public-read": {ALL_USERS: READ},
    "authenticated-read": {AUTHENTICATED: READ},
    # Objects belong to the bucket's tenant here, so these are the owner's private ACL.
    "bucket-owner-read": {},
    "bucket-owner-full-control": {},
    "public-read-write": None,
}
_GRANT_HEADERS = {
    "x-amz-grant-read": "READ",
    "x-amz-grant-write": "WRITE",
    "x-amz-grant-read-acp": "READ_ACP",
    "x-amz-grant-write-acp": "WRITE_ACP",
    "x-amz-grant-full-control": "FULL_CONTROL",
}
_GRANTEE = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*"([^"]*)"\s*(?:,|$)', re.IGNORECASE)


def from_headers(
    request: S3Request, exists: TenantExists, owner: str, bucket: bool
) -> Grants | None:
    """The grants ``x-amz-acl`` or ``x-amz-grant-*`` ask for; None when neither is sent.

    Raises:
        S3Error: InvalidRequest (both kinds), InvalidArgument, AccessDenied or
            NotImplemented for what cannot be honoured (see the module doc).
    """
    canned = request.header("x-amz-acl")
    headers = [(name, request.header(name)) for name in _GRANT_HEADERS if request.header(name)]
    if canned and headers:
        raise S3Error(
            "InvalidRequest",
            "Specifying both Canned ACLs and Header Grants is not allowed.",
            fix="send x-amz-acl or x-amz-grant-* headers, not both",
        )
    if canned:
        return _canned(canned)
    if not headers:
        return None
    asked: list[tuple[str, str, str]] = []
    for name, value in headers:
        matches = list(_GRANTEE.finditer(value))
        if not matches or sum(len(m.group(0)) for m in matches) != len(value):
            raise S3Error("InvalidArgument", f"{name} is not a list of id=, uri= or emailAddress=.")
        for match in matches:
            kind = {"id": "CanonicalUser", "uri": "Group"}.get(match.group(1).lower(), "Email")
            asked.append((kind, match.group(2), _GRANT_HEADERS[name]))
    return _grants(asked, exists, owner, bucket)


def from_xml(body: bytes, exists: TenantExists, owner: str, bucket: bool) -> Grants:
    """The grants of an ``AccessControlPolicy`` document.

    Raises:
        S3Error: MalformedACLError, or as ``from_headers``.
    """
    root = parse_xml(body)
    if _local(root.tag) != "AccessControlPolicy":
        raise S3Error("MalformedACLError", "The body is no AccessControlPolicy document.")
    listed = _child(root, "AccessControlList")
    owner_id = _text(_child(_child(root, "Owner"), "ID"))
    if owner_id and owner_id != owner:
        raise S3Error(
            "AccessDenied",
            f"The ACL names owner {owner_id!r}; this {'bucket' if bucket else 'object'} is "
            f"tenant {owner!r}'s, and owners do not change through ACLs.",
        )
    asked = []
    for grant in [] if listed is None else listed:
        if _local(grant.tag) != "Grant":
            raise S3Error("MalformedACLError", f"Unexpected element {_local(grant.tag)!r}.")
        grantee = _child(grant, "Grantee")
        permission = _text(_child(grant, "Permission"))
        if grantee is None or not permission:
            raise S3Error("MalformedACLError", "Each Grant needs a Grantee and a Permission.")
        kind = grantee.get(f"{{{_XSI}}}type", "")
        value = {
            "CanonicalUser": _text(_child(grantee, "ID")),
            "Group": _text(_child(grantee, "URI")),
            "AmazonCustomerByEmail": _text(_child(grantee, "EmailAddress")),
        }.get(kind)
        if value is None:
            raise S3Error("MalformedACLError", f"Unknown grantee type {kind!r}.")
        asked.append((kind if kind != "AmazonCustomerByEmail" else "Email", value, permission))
    return _grants(asked, exists, owner, bucket)


def reads(grants: Grants, caller: Caller) -> bool:
    """Whether ``grants`` (an object's) let ``caller`` read."""
    if ALL_USERS in grants:
        return True
    return not caller.anonymous and (AUTHENTICATED in grants or caller.tenant in grants)


def policy_xml(owner: str, grants: Grants) -> bytes:
    """The ``AccessControlPolicy`` document of ``grants``: groups, the owner, then tenants.

    (The order RGW gives, which clients' tests expect.)
    """
    entries = [_grant_xml("Group", group, "READ") for group in GROUPS if group in grants]
    entries.append(_grant_xml("CanonicalUser", owner, "FULL_CONTROL"))
    for grantee, level in sorted(grants.items()):
        if grantee not in GROUPS:
            permissions = ["READ", "WRITE"] if level == WRITE else ["READ"]
            entries += [_grant_xml("CanonicalUser", grantee, p) for p in permissions]
    owner_xml = f"<Owner>{element('ID', owner)}{element('DisplayName', owner)}</Owner>"
    return document(
        "AccessControlPolicy",
        [owner_xml, f"<AccessControlList>{''.join(entries)}</AccessControlList>"],
    )


def _grant_xml(kind: str, grantee: str, permission: str) -> str:
    if kind == "Group":
        who = element("URI", grantee)
    else:
        who = f"{element('ID', grantee)}{element('DisplayName', grantee)}"
    return (
        f'<Grant><Grantee xmlns:xsi="{_XSI}" xsi:type="{kind}">{who}</Grantee>'
        f"{element('Permission', permission)}</Grant>"
    )


def _canned(name: str) -> Grants:
    if name not in _CANNED:
        raise S3Error(
            "NotImplemented"
            if name in ("aws-exec-read", "log-delivery-write")
            else "InvalidArgument",
            f"The canned ACL {name!r} is not supported here.",
            fix="use private, public-read, authenticated-read or bucket-owner-full-control",
        )
    grants = _CANNED[name]
    if grants is None:
        raise _no_public_writes()
    return dict(grants)


def _grants(
    asked: list[tuple[str, str, str]], exists: TenantExists, owner: str, bucket: bool
) -> Grants:
    grants: Grants = {}
    for kind, grantee, permission in asked:
        if permission not in ("READ", "WRITE", "READ_ACP", "WRITE_ACP", "FULL_CONTROL"):
            raise S3Error("MalformedACLError", f"Unknown permission {permission!r}.")
        if kind == "Email":
            raise S3Error(
                "UnresolvableGrantByEmailAddress",
                f"Grants here name tenants by canonical id, not e-mail ({grantee!r}).",
                fix='grant to id="TENANT"',
            )
        if kind == "Group":
            if grantee not in GROUPS:
                raise S3Error(
                    "NotImplemented", f"Grants to the group {grantee!r} are not supported."
                )
            if permission != "READ":
                raise _no_public_writes() if permission == "WRITE" else _owner_only(permission)
        elif grantee == owner:
            continue  # the owner's own control is implicit
        elif not exists(grantee):
            raise S3Error("InvalidArgument", f"Invalid id: no tenant is named {grantee!r}.")
        elif permission not in ("READ", "WRITE"):
            raise _owner_only(permission)
        elif permission == "WRITE" and not bucket:
            raise S3Error(
                "NotImplemented",
                "WRITE grants apply to buckets; an object's writers are its bucket's.",
                fix="grant WRITE on the bucket",
            )
        level = WRITE if permission == "WRITE" else READ
        if grants.get(grantee) != WRITE:
            grants[grantee] = level
    return grants


def _no_public_writes() -> S3Error:
    return S3Error(
        "AccessDenied",
        "Writes by groups (public-read-write, AllUsers or AuthenticatedUsers WRITE) are "
        "refused: anonymous and any-tenant writes are never allowed here.",
        fix="grant WRITE to named tenants, or use public-read",
    )


def _owner_only(permission: str) -> S3Error:
    return S3Error(
        "NotImplemented",
        f"{permission} can only be the owner's: only the bucket's tenant manages its ACLs.",
        fix="grant READ or WRITE",
    )


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(parent: Element | None, name: str) -> Element | None:
    if parent is None:
        return None
    for child in parent:
        if _local(child.tag) == name:
            return child
    return None


def _text(node: Element | None) -> str:
    return "" if node is None else (node.text or "").strip()
