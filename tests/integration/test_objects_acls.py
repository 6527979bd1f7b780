"""S3 ACLs mapped to tenants, and unsigned reads of public data, on a real `objects serve`.

Three tenants: alice owns the buckets, bob is granted or not, carol never is.
Unsigned requests come from curl and from boto3 with ``botocore.UNSIGNED``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from unix_users import make_traversable

from .objects_server import S3Server, start_objects_server

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
RATE = 10  # unsigned requests per second per address (bursts of twice that)


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(
        tmp_path_factory.mktemp("objects-acls"), objects_anonymous_rps=str(RATE)
    )
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def alice(s3server: S3Server) -> Any:
    return s3server.client(s3server.issue("alice"))


@pytest.fixture(scope="module")
def bob(s3server: S3Server) -> Any:
    return s3server.client(s3server.issue("bob"))


@pytest.fixture(scope="module")
def carol(s3server: S3Server) -> Any:
    return s3server.client(s3server.issue("carol"))


@pytest.fixture(scope="module")
def unsigned(s3server: S3Server) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3server.url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )


def _code(call: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    error = caught.value.response
    return error["ResponseMetadata"]["HTTPStatusCode"], error["Error"].get("Code", "")


def _curl(url: str, *args: str) -> tuple[int, bytes]:
    done = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args, "--", url],
        capture_output=True,
        check=True,
        timeout=30,
    )
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


def _grants(acl: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (grant["Grantee"].get("ID") or grant["Grantee"].get("URI"), grant["Permission"])
        for grant in acl["Grants"]
    }


def _rest() -> None:
    time.sleep(2.5)  # the address's bucket refills (2 x RATE at RATE per second)


def test_a_read_grant_lets_one_tenant_read_and_no_other(alice: Any, bob: Any, carol: Any) -> None:
    alice.create_bucket(Bucket="shared-acl")
    alice.put_object(Bucket="shared-acl", Key="a.txt", Body=b"alice's")
    assert _code(bob.get_object, Bucket="shared-acl", Key="a.txt") == (403, "AccessDenied")

    alice.put_bucket_acl(Bucket="shared-acl", GrantRead='id="bob"')
    assert bob.get_object(Bucket="shared-acl", Key="a.txt")["Body"].read() == b"alice's"
    assert [o["Key"] for o in bob.list_objects_v2(Bucket="shared-acl")["Contents"]] == ["a.txt"]
    assert _code(carol.get_object, Bucket="shared-acl", Key="a.txt") == (403, "AccessDenied")
    assert _code(bob.put_object, Bucket="shared-acl", Key="b", Body=b"x") == (403, "AccessDenied")
    # Only the owner manages ACLs, even for a tenant who may read.
    assert _code(bob.get_bucket_acl, Bucket="shared-acl") == (403, "AccessDenied")
    assert _code(bob.put_bucket_acl, Bucket="shared-acl", ACL="public-read") == (
        403,
        "AccessDenied",
    )
    acl = alice.get_bucket_acl(Bucket="shared-acl")
    assert acl["Owner"]["ID"] == "alice"
    assert _grants(acl) == {("alice", "FULL_CONTROL"), ("bob", "READ")}
    # Any tenant lists an authenticated-read bucket, and copies nothing out of it.
    alice.put_bucket_acl(Bucket="shared-acl", ACL="authenticated-read")
    assert [o["Key"] for o in carol.list_objects_v2(Bucket="shared-acl")["Contents"]] == ["a.txt"]
    assert _code(carol.get_object, Bucket="shared-acl", Key="a.txt") == (403, "AccessDenied")
    carol.create_bucket(Bucket="carols")
    assert _code(
        carol.copy_object, Bucket="carols", Key="stolen", CopySource="shared-acl/a.txt"
    ) == (403, "AccessDenied")

    alice.put_bucket_acl(Bucket="shared-acl", ACL="private")
    assert _code(bob.get_object, Bucket="shared-acl", Key="a.txt") == (403, "AccessDenied")


def test_an_object_grant_opens_that_object_alone(alice: Any, bob: Any, carol: Any) -> None:
    alice.create_bucket(Bucket="objects-acl")
    alice.put_object(Bucket="objects-acl", Key="open.txt", Body=b"open", GrantRead='id="bob"')
    alice.put_object(Bucket="objects-acl", Key="closed.txt", Body=b"closed")
    assert bob.get_object(Bucket="objects-acl", Key="open.txt")["Body"].read() == b"open"
    assert _code(bob.get_object, Bucket="objects-acl", Key="closed.txt") == (403, "AccessDenied")
    # No word on what does not exist to a caller the bucket does not admit.
    assert _code(bob.head_object, Bucket="objects-acl", Key="absent")[0] == 403
    assert _code(bob.list_objects_v2, Bucket="objects-acl") == (403, "AccessDenied")
    assert _code(carol.get_object, Bucket="objects-acl", Key="open.txt") == (403, "AccessDenied")

    policy = alice.get_object_acl(Bucket="objects-acl", Key="open.txt")
    assert _grants(policy) == {("alice", "FULL_CONTROL"), ("bob", "READ")}
    policy["Grants"] = [g for g in policy["Grants"] if g["Permission"] == "FULL_CONTROL"]
    alice.put_object_acl(
        Bucket="objects-acl",
        Key="open.txt",
        AccessControlPolicy={"Grants": policy["Grants"], "Owner": policy["Owner"]},
    )
    assert _code(bob.get_object, Bucket="objects-acl", Key="open.txt") == (403, "AccessDenied")
    # An overwrite is a new object: private unless it says otherwise.
    alice.put_object_acl(Bucket="objects-acl", Key="open.txt", GrantRead='id="bob"')
    alice.put_object(Bucket="objects-acl", Key="open.txt", Body=b"new")
    assert _code(bob.get_object, Bucket="objects-acl", Key="open.txt") == (403, "AccessDenied")


def test_grants_that_cannot_be_honoured_are_refused(alice: Any) -> None:
    alice.create_bucket(Bucket="refusals")
    assert _code(alice.put_bucket_acl, Bucket="refusals", ACL="public-read-write") == (
        403,
        "AccessDenied",
    )
    assert _code(alice.create_bucket, Bucket="refused-rw", ACL="public-read-write") == (
        403,
        "AccessDenied",
    )
    assert _code(alice.head_bucket, Bucket="refused-rw")[0] == 404
    assert _code(alice.put_bucket_acl, Bucket="refusals", GrantRead='id="nobody-here"') == (
        400,
        "InvalidArgument",
    )
    assert _code(alice.put_bucket_acl, Bucket="refusals", GrantFullControl='id="bob"') == (
        501,
        "NotImplemented",
    )
    assert _code(alice.put_bucket_acl, Bucket="refusals", GrantWrite=f'uri="{ALL_USERS}"') == (
        403,
        "AccessDenied",
    )
    assert _code(
        alice.put_bucket_acl, Bucket="refusals", GrantRead='emailAddress="bob@example.org"'
    ) == (400, "UnresolvableGrantByEmailAddress")
    assert _code(
        alice.put_object, Bucket="refusals", Key="k", Body=b"", ACL="public-read-write"
    ) == (403, "AccessDenied")


def test_public_objects_and_buckets_are_read_unsigned(
    s3server: S3Server, alice: Any, unsigned: Any
) -> None:
    alice.create_bucket(Bucket="open-data")
    alice.put_object(Bucket="open-data", Key="public.csv", Body=b"a,b\n", ACL="public-read")
    alice.put_object(Bucket="open-data", Key="private.csv", Body=b"secret")

    status, body = _curl(f"{s3server.url}/open-data/public.csv")
    assert (status, body) == (200, b"a,b\n")
    assert unsigned.get_object(Bucket="open-data", Key="public.csv")["Body"].read() == b"a,b\n"
    assert unsigned.head_object(Bucket="open-data", Key="public.csv")["ContentLength"] == 4
    assert _curl(f"{s3server.url}/open-data/private.csv")[0] == 403
    assert _code(unsigned.get_object, Bucket="open-data", Key="private.csv") == (
        403,
        "AccessDenied",
    )
    assert _code(unsigned.list_objects_v2, Bucket="open-data") == (403, "AccessDenied")
    # Anonymous writes are refused, whatever the ACL says.
    assert _code(unsigned.put_object, Bucket="open-data", Key="x", Body=b"x") == (
        403,
        "AccessDenied",
    )
    assert _code(unsigned.delete_object, Bucket="open-data", Key="public.csv")[0] == 403
    assert _curl(f"{s3server.url}/", "-X", "GET")[0] == 403
    assert _curl(f"{s3server.url}/open-data", "-X", "POST")[0] == 403  # no route: still 403

    # A public bucket lists for anyone; its objects' bytes follow their own ACLs (as on S3).
    alice.put_bucket_acl(Bucket="open-data", ACL="public-read")
    listed = unsigned.list_objects_v2(Bucket="open-data")
    assert [o["Key"] for o in listed["Contents"]] == ["private.csv", "public.csv"]
    assert _curl(f"{s3server.url}/open-data?list-type=2")[0] == 200
    assert _code(unsigned.get_object, Bucket="open-data", Key="private.csv")[0] == 403
    assert unsigned.get_object(Bucket="open-data", Key="public.csv")["Body"].read() == b"a,b\n"
    # Who may list a bucket may learn a key is absent; others are only told 403.
    assert _code(unsigned.get_object, Bucket="open-data", Key="absent") == (404, "NoSuchKey")
    assert _code(unsigned.put_object, Bucket="open-data", Key="x", Body=b"x") == (
        403,
        "AccessDenied",
    )


def test_unsigned_reads_are_rate_limited_per_address(s3server: S3Server, alice: Any) -> None:
    alice.create_bucket(Bucket="busy")
    alice.put_object(Bucket="busy", Key="hot", Body=b"hot", ACL="public-read")
    _rest()
    with httpx.Client(timeout=30) as http:
        answers = [http.get(f"{s3server.url}/busy/hot") for _ in range(8 * RATE)]
    statuses = [answer.status_code for answer in answers]
    assert statuses[: 2 * RATE - 2] == [200] * (2 * RATE - 2), statuses
    assert statuses.count(503) >= 4 * RATE, statuses
    refused = next(answer for answer in answers if answer.status_code == 503)
    assert b"<Code>SlowDown</Code>" in refused.content
    assert int(refused.headers["retry-after"]) >= 1
    # A signed client is not limited by the anonymous rate.
    for _ in range(3):
        assert alice.get_object(Bucket="busy", Key="hot")["Body"].read() == b"hot"
    _rest()
    assert _curl(f"{s3server.url}/busy/hot")[0] == 200


def test_multipart_and_copy_carry_the_asked_acl(alice: Any, unsigned: Any) -> None:
    alice.create_bucket(Bucket="carried")
    upload = alice.create_multipart_upload(Bucket="carried", Key="big", ACL="public-read")
    part = alice.upload_part(
        Bucket="carried", Key="big", UploadId=upload["UploadId"], PartNumber=1, Body=b"parts"
    )
    alice.complete_multipart_upload(
        Bucket="carried",
        Key="big",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert unsigned.get_object(Bucket="carried", Key="big")["Body"].read() == b"parts"
    alice.copy_object(Bucket="carried", Key="copy", CopySource="carried/big")
    assert _code(unsigned.get_object, Bucket="carried", Key="copy")[0] == 403
    alice.copy_object(Bucket="carried", Key="copy2", CopySource="carried/big", ACL="public-read")
    assert unsigned.get_object(Bucket="carried", Key="copy2")["Body"].read() == b"parts"


@pytest.mark.skipif(os.getuid() != 0, reason="file modes follow grants with a root control plane")
def test_a_public_object_file_is_readable_by_others(s3server: S3Server, alice: Any) -> None:
    make_traversable(s3server.root)
    alice.create_bucket(Bucket="modes")
    alice.put_object(Bucket="modes", Key="dir/pub", Body=b"p", ACL="public-read")
    alice.put_object(Bucket="modes", Key="priv", Body=b"q")
    alice.put_object(Bucket="modes", Key="pub", Body=b"p", ACL="public-read")
    # Others may pass the directories to a public file (not list them), and read it.
    nobody = ["runuser", "-u", "aif-bob", "--", "cat", str(s3server.root / "modes/dir/pub")]
    assert subprocess.run(nobody, capture_output=True).stdout == b"p"
    assert stat.S_IMODE((s3server.root / "modes" / "dir").stat().st_mode) == 0o2751
    assert stat.S_IMODE((s3server.root / "modes" / "pub").stat().st_mode) == 0o644
    assert stat.S_IMODE((s3server.root / "modes" / "priv").stat().st_mode) == 0o640
    nobody[-1] = str(s3server.root / "modes/priv")
    assert subprocess.run(nobody, capture_output=True).returncode != 0
    alice.put_object_acl(Bucket="modes", Key="priv", ACL="public-read")
    assert stat.S_IMODE((s3server.root / "modes" / "priv").stat().st_mode) == 0o644
    assert subprocess.run(nobody, capture_output=True).stdout == b"q"
    alice.put_object_acl(Bucket="modes", Key="pub", ACL="private")
    assert stat.S_IMODE((s3server.root / "modes" / "pub").stat().st_mode) == 0o640
