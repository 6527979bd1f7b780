"""POST Object (browser form uploads) on a real server: boto3's presigned posts sent with requests.

SigV4 forms from ``generate_presigned_post``, SigV2 forms signed by hand as
the ceph s3-tests do, and the policy checks S3 makes: conditions, lengths,
expiry, the bucket, another tenant's key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from .objects_server import S3Server, start_objects_server

BUCKET = "forms"


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(tmp_path_factory.mktemp("objects-post"))
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def credentials(s3server: S3Server) -> tuple[str, str]:
    return s3server.issue("forms")


@pytest.fixture(scope="module")
def s3(s3server: S3Server, credentials: tuple[str, str]) -> Any:
    # boto3 presigns with SigV2 for custom endpoints unless told otherwise.
    client = s3server.client(credentials, signature_version="s3v4")
    client.create_bucket(Bucket=BUCKET)
    return client


def _error(response: requests.Response) -> tuple[int, str, str]:
    root = ET.fromstring(response.content)
    return response.status_code, root.findtext("Code") or "", root.findtext("Message") or ""


def _v2_form(secret: str, access_key: str, policy: dict[str, Any]) -> dict[str, str]:
    encoded = base64.b64encode(json.dumps(policy).encode())
    signature = base64.b64encode(hmac.new(secret.encode(), encoded, hashlib.sha1).digest())
    return {
        "AWSAccessKeyId": access_key,
        "policy": encoded.decode(),
        "signature": signature.decode(),
    }


def _expires(seconds: int = 600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_boto3_presigned_post_uploads_a_file_streamed_to_disk(
    s3: Any, s3server: S3Server
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    post = s3.generate_presigned_post(
        BUCKET,
        "uploads/${filename}",
        Fields={"Content-Type": "application/x-spectrum", "x-amz-meta-run": "7"},
        Conditions=[
            ["starts-with", "$Content-Type", "application/"],
            {"x-amz-meta-run": "7"},
            ["content-length-range", 1, 8 * 1024 * 1024],
        ],
        ExpiresIn=300,
    )
    assert "x-amz-signature" in post["fields"]
    response = requests.post(
        post["url"], data=post["fields"], files={"file": ("spectrum.bin", data)}, timeout=30
    )
    assert response.status_code == 204, response.text
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    assert response.headers["ETag"] == etag
    assert response.headers["Location"].endswith(f"/{BUCKET}/uploads/spectrum.bin")
    got = s3.get_object(Bucket=BUCKET, Key="uploads/spectrum.bin")
    assert got["Body"].read() == data and got["ETag"] == etag
    assert got["ContentType"] == "application/x-spectrum" and got["Metadata"] == {"run": "7"}
    assert (s3server.root / BUCKET / "uploads" / "spectrum.bin").read_bytes() == data


def test_success_action_status_201_answers_a_post_response(s3: Any) -> None:
    post = s3.generate_presigned_post(
        BUCKET, "status.txt", Fields={"success_action_status": "201"},
        Conditions=[{"success_action_status": "201"}],
    )  # fmt: skip
    response = requests.post(post["url"], data=post["fields"], files={"file": b"x"}, timeout=10)
    assert response.status_code == 201, response.text
    root = ET.fromstring(response.content)
    namespace = "{http://s3.amazonaws.com/doc/2006-03-01/}"
    assert root.findtext(f"{namespace}Key") == "status.txt"
    assert root.findtext(f"{namespace}Bucket") == BUCKET


def test_success_action_redirect_sends_the_browser_on_with_bucket_key_and_etag(s3: Any) -> None:
    target = "https://app.example.org/done?upload=1"
    post = s3.generate_presigned_post(
        BUCKET, "redirected.txt", Fields={"success_action_redirect": target},
        Conditions=[{"success_action_redirect": target}],
    )  # fmt: skip
    response = requests.post(
        post["url"], data=post["fields"], files={"file": b"abc"}, allow_redirects=False, timeout=10
    )
    assert response.status_code == 303, response.text
    etag = hashlib.md5(b"abc").hexdigest()
    assert response.headers["Location"] == (
        f"{target}&bucket={BUCKET}&key=redirected.txt&etag=%22{etag}%22"
    )


def test_a_v2_signed_policy_checks_every_condition(
    s3server: S3Server, credentials: tuple[str, str], s3: Any
) -> None:
    access_key, secret = credentials
    url = f"{s3server.url}/{BUCKET}"
    policy = {
        "expiration": _expires(),
        "conditions": [
            {"bUcKeT": BUCKET},
            ["StArTs-WiTh", "$KeY", "v2/"],
            ["starts-with", "$Content-Type", "text/"],
            ["content-length-range", 2, 10],
        ],
    }
    form = {"kEy": "v2/a.txt", "Content-Type": "text/plain", **_v2_form(secret, access_key, policy)}
    ok = requests.post(url, data=form, files={"file": b"hello"}, timeout=10)
    assert ok.status_code == 204, ok.text
    assert s3.get_object(Bucket=BUCKET, Key="v2/a.txt")["Body"].read() == b"hello"

    refusals = [
        ({**form, "key": "other/a.txt", "kEy": "other/a.txt"}, b"hello", "AccessDenied",
         'Policy Condition failed: ["starts-with", "$key", "v2/"]'),
        ({**form, "x-amz-meta-sneaky": "1"}, b"hello", "AccessDenied",
         "Extra input fields: x-amz-meta-sneaky"),
        (form, b"x" * 11, "EntityTooLarge", "larger than the policy's 10 bytes"),
        (form, b"x", "EntityTooSmall", "smaller than the policy's 2 bytes"),
        ({**form, "signature": "AAAA" + form["signature"][4:]}, b"hello",
         "SignatureDoesNotMatch", ""),
        ({**form, "AWSAccessKeyId": "AKNOTAKEY"}, b"hello", "InvalidAccessKeyId", ""),
    ]  # fmt: skip
    for fields, body, code, reason in refusals:
        response = requests.post(url, data=fields, files={"file": body}, timeout=10)
        status, got_code, message = _error(response)
        assert (got_code, status) == (
            code,
            403 if code not in ("EntityTooLarge", "EntityTooSmall") else 400,
        )
        assert reason in message
    # The bucket is the URL's: the same form posted to another bucket fails its condition.
    s3.create_bucket(Bucket="forms-other")
    moved = requests.post(
        f"{s3server.url}/forms-other", data=form, files={"file": b"hello"}, timeout=10
    )
    assert _error(moved)[:2] == (403, "AccessDenied")
    assert "Contents" not in s3.list_objects_v2(Bucket="forms-other")


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        ({"conditions": [{"bucket": BUCKET}]}, "Policy missing expiration"),
        ({"expiration": "2026-12-07 10:00:00+00:00", "conditions": []}, "Invalid 'expiration'"),
        ({"expiration": "2099-01-01T00:00:00Z"}, "Policy missing conditions"),
        ({"expiration": "2099-01-01T00:00:00Z", "conditions": [{}]}, "exactly one field"),
        ({"expiration": "2099-01-01T00:00:00Z", "conditions": [["content-length-range", -1, 0]]},
         "0 <= minimum <= maximum"),
    ],
)  # fmt: skip
def test_a_broken_policy_is_invalid_policy_document(
    s3server: S3Server, credentials: tuple[str, str], s3: Any, policy: dict[str, Any], why: str
) -> None:
    form = {"key": "broken.txt", **_v2_form(credentials[1], credentials[0], policy)}
    response = requests.post(
        f"{s3server.url}/{BUCKET}", data=form, files={"file": b"x"}, timeout=10
    )
    status, code, message = _error(response)
    assert (status, code) == (400, "InvalidPolicyDocument") and why in message


def test_an_expired_policy_and_a_missing_file_are_refused(
    s3server: S3Server, credentials: tuple[str, str], s3: Any
) -> None:
    url = f"{s3server.url}/{BUCKET}"
    expired = {"expiration": _expires(-60), "conditions": [{"bucket": BUCKET}, {"key": "e"}]}
    form = {"key": "e", **_v2_form(credentials[1], credentials[0], expired)}
    response = requests.post(url, data=form, files={"file": b"x"}, timeout=10)
    assert _error(response) == (403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    fresh = {**expired, "expiration": _expires()}
    no_file = requests.post(
        url, files={"key": (None, "e"), **{
            k: (None, v) for k, v in _v2_form(credentials[1], credentials[0], fresh).items()
        }}, timeout=10,
    )  # fmt: skip
    assert _error(no_file)[:2] == (400, "IncorrectNumberOfFilesInPostRequest")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="e")


def test_a_form_signed_by_another_tenant_cannot_write_the_bucket(
    s3server: S3Server, s3: Any
) -> None:
    other = s3server.client(s3server.issue("intruders"), signature_version="s3v4")
    post = other.generate_presigned_post(BUCKET, "planted.txt")
    response = requests.post(post["url"], data=post["fields"], files={"file": b"x"}, timeout=10)
    assert _error(response)[:2] == (403, "AccessDenied")
    anonymous = requests.post(
        f"{s3server.url}/{BUCKET}", data={"key": "planted.txt"}, files={"file": b"x"}, timeout=10
    )
    assert _error(anonymous)[:2] == (403, "AccessDenied")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="planted.txt")
