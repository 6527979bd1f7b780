"""ACL requests translated into tenant grants, and the unsigned-read limiter."""

from __future__ import annotations

import pytest

from aifactory.objects.errors import S3Error
from aifactory.objects.s3 import acl
from aifactory.objects.s3.anonymous import AnonymousLimit
from aifactory.objects.s3.auth import ANONYMOUS, Caller
from aifactory.objects.s3.request import S3Request

TENANTS = {"alice", "bob"}


def _request(**headers: str) -> S3Request:
    return S3Request(
        "PUT", "/b", "/b", "b", "", [("acl", "")],
        {name.replace("_", "-"): [value] for name, value in headers.items()}, False, "id",
    )  # fmt: skip


def _from_headers(bucket: bool = True, **headers: str) -> acl.Grants | None:
    return acl.from_headers(_request(**headers), TENANTS.__contains__, "alice", bucket)


def _code(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(S3Error) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value.code or ""


def test_canned_acls_become_grants() -> None:
    assert _from_headers() is None
    assert _from_headers(x_amz_acl="private") == {}
    assert _from_headers(x_amz_acl="public-read") == {acl.ALL_USERS: "read"}
    assert _from_headers(x_amz_acl="authenticated-read") == {acl.AUTHENTICATED: "read"}
    assert _from_headers(x_amz_acl="bucket-owner-full-control") == {}
    assert _code(_from_headers, x_amz_acl="public-read-write") == "AccessDenied"
    assert _code(_from_headers, x_amz_acl="log-delivery-write") == "NotImplemented"
    assert _code(_from_headers, x_amz_acl="everyone") == "InvalidArgument"
    both = {"x_amz_acl": "private", "x_amz_grant_read": 'id="bob"'}
    assert _code(_from_headers, **both) == "InvalidRequest"


def test_grant_headers_name_tenants_and_groups() -> None:
    grants = _from_headers(
        x_amz_grant_read=f'id="bob", uri="{acl.ALL_USERS}"', x_amz_grant_full_control='id="alice"'
    )
    assert grants == {"bob": "read", acl.ALL_USERS: "read"}
    assert _from_headers(x_amz_grant_write='id="bob"', x_amz_grant_read='id="bob"') == {
        "bob": "write"
    }
    assert _code(_from_headers, x_amz_grant_read='id="mallory"') == "InvalidArgument"
    assert _code(_from_headers, x_amz_grant_read_acp='id="bob"') == "NotImplemented"
    assert _code(_from_headers, x_amz_grant_write=f'uri="{acl.AUTHENTICATED}"') == "AccessDenied"
    assert _code(_from_headers, x_amz_grant_read='uri="http://example.org/g"') == "NotImplemented"
    assert _code(_from_headers, x_amz_grant_read='emailAddress="b@x"') == (
        "UnresolvableGrantByEmailAddress"
    )
    assert _code(_from_headers, x_amz_grant_read="bob") == "InvalidArgument"
    assert _code(_from_headers, bucket=False, x_amz_grant_write='id="bob"') == "NotImplemented"


def test_a_policy_document_round_trips() -> None:
    grants = {"bob": "write", acl.ALL_USERS: "read"}
    document = acl.policy_xml("alice", grants)
    assert acl.from_xml(document, TENANTS.__contains__, "alice", True) == grants
    assert _code(acl.from_xml, document, TENANTS.__contains__, "bob", True) == "AccessDenied"
    assert _code(acl.from_xml, b"<Nope/>", TENANTS.__contains__, "alice", True) == (
        "MalformedACLError"
    )


def test_object_grants_read_for_whom_they_name() -> None:
    bob = Caller("k", 2, "bob", is_admin=False)
    carol = Caller("k", 3, "carol", is_admin=False)
    assert acl.reads({"bob": "read"}, bob) and not acl.reads({"bob": "read"}, carol)
    assert acl.reads({acl.AUTHENTICATED: "read"}, carol)
    assert not acl.reads({acl.AUTHENTICATED: "read"}, ANONYMOUS)
    assert acl.reads({acl.ALL_USERS: "read"}, ANONYMOUS)


def test_unsigned_reads_are_limited_per_address_and_writes_refused() -> None:
    now = [0.0]
    limit = AnonymousLimit(2, clock=lambda: now[0])
    for _ in range(4):
        limit.admit("GetObject", "10.0.0.1")
    assert _code(limit.admit, "GetObject", "10.0.0.1") == "SlowDown"
    limit.admit("GetObject", "10.0.0.2")
    now[0] = 0.5
    limit.admit("HeadObject", "10.0.0.1")
    assert _code(limit.admit, "PutObject", "10.0.0.3") == "AccessDenied"
    assert _code(AnonymousLimit(0).admit, "GetObject", "10.0.0.3") == "AccessDenied"
