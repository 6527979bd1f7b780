"""Buckets' CORS rules on a real server: boto3 sets them, preflights and reads obey them.

Preflights (OPTIONS) and the Origin header are sent with requests, the way a
browser sends them; signed requests are boto3's presigned URLs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from .objects_server import S3Server, start_objects_server

BUCKET = "shared-web"
RULES = {
    "CORSRules": [
        {
            "AllowedOrigins": ["https://*.example.org"],
            "AllowedMethods": ["GET", "HEAD"],
            "AllowedHeaders": ["x-amz-*", "Range"],
            "ExposeHeaders": ["ETag", "x-amz-meta-run"],
            "MaxAgeSeconds": 600,
        },
        {"AllowedOrigins": ["*"], "AllowedMethods": ["PUT"]},
    ]
}


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(tmp_path_factory.mktemp("objects-cors"))
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def s3(s3server: S3Server) -> Any:
    client = s3server.client(s3server.issue("web"), signature_version="s3v4")
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="page.json", Body=b"{}", Metadata={"run": "7"})
    return client


def _code(response: requests.Response) -> tuple[int, str]:
    return response.status_code, ET.fromstring(response.content).findtext("Code") or ""


def test_put_get_delete_bucket_cors_round_trip(s3: Any) -> None:
    with pytest.raises(ClientError) as none:
        s3.get_bucket_cors(Bucket=BUCKET)
    assert none.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=RULES)
    got = s3.get_bucket_cors(Bucket=BUCKET)["CORSRules"]
    assert got[0]["AllowedOrigins"] == ["https://*.example.org"]
    assert got[0]["AllowedHeaders"] == ["x-amz-*", "range"] and got[0]["MaxAgeSeconds"] == 600
    assert got[1] == {"AllowedOrigins": ["*"], "AllowedMethods": ["PUT"]}
    s3.delete_bucket_cors(Bucket=BUCKET)
    with pytest.raises(ClientError):
        s3.get_bucket_cors(Bucket=BUCKET)
    with pytest.raises(ClientError) as bad:
        s3.put_bucket_cors(
            Bucket=BUCKET,
            CORSConfiguration={
                "CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]
            },
        )
    assert bad.value.response["Error"]["Code"] == "InvalidRequest"


def test_preflights_answer_from_the_first_matching_rule(s3server: S3Server, s3: Any) -> None:
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=RULES)
    url = f"{s3server.url}/{BUCKET}/page.json"
    allowed = requests.options(
        url,
        headers={
            "Origin": "https://app.example.org",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "X-Amz-Date, range",
        },
        timeout=10,
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
    assert allowed.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert allowed.headers["Access-Control-Allow-Headers"] == "x-amz-date, range"
    assert allowed.headers["Access-Control-Max-Age"] == "600"
    assert allowed.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-meta-run"
    anywhere = requests.options(
        url, headers={"Origin": "https://else.net", "Access-Control-Request-Method": "PUT"},
        timeout=10,
    )  # fmt: skip
    assert anywhere.status_code == 200 and anywhere.headers["Access-Control-Allow-Origin"] == "*"
    for refused in (
        {"Origin": "https://else.net", "Access-Control-Request-Method": "GET"},
        {"Origin": "https://example.org.evil.net", "Access-Control-Request-Method": "GET"},
        {
            "Origin": "https://app.example.org",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    ):
        response = requests.options(url, headers=refused, timeout=10)
        assert _code(response) == (403, "AccessForbidden"), refused
        assert "Access-Control-Allow-Origin" not in response.headers
    assert _code(requests.options(url, timeout=10)) == (400, "BadRequest")
    assert _code(
        requests.options(url, headers={"Origin": "https://a.example.org"}, timeout=10)
    ) == (
        400,
        "BadRequest",
    )


def test_signed_reads_from_an_allowed_origin_carry_the_cors_headers(
    s3server: S3Server, s3: Any
) -> None:
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=RULES)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "page.json"})
    read = requests.get(url, headers={"Origin": "https://app.example.org"}, timeout=10)
    assert read.status_code == 200 and read.content == b"{}"
    assert read.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
    assert read.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-meta-run"
    assert read.headers["Vary"] == "Origin"
    other = requests.get(url, headers={"Origin": "https://else.net"}, timeout=10)
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    missing = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "absent"})
    gone = requests.get(missing, headers={"Origin": "https://app.example.org"}, timeout=10)
    assert gone.status_code == 404
    assert gone.headers["Access-Control-Allow-Origin"] == "https://app.example.org"


def test_only_the_owner_sets_cors_and_a_recreated_bucket_starts_without(
    s3server: S3Server, s3: Any
) -> None:
    reader_pair = s3server.issue("readers")
    other = s3server.client(reader_pair, signature_version="s3v4")
    for attempt in (
        lambda: other.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=RULES),
        lambda: other.get_bucket_cors(Bucket=BUCKET),
        lambda: other.delete_bucket_cors(Bucket=BUCKET),
    ):
        with pytest.raises(ClientError) as denied:
            attempt()
        assert denied.value.response["Error"]["Code"] == "AccessDenied"

    s3.create_bucket(Bucket="short-lived")
    s3.put_bucket_cors(Bucket="short-lived", CORSConfiguration=RULES)
    s3.delete_bucket(Bucket="short-lived")
    other.create_bucket(Bucket="short-lived")
    with pytest.raises(ClientError) as fresh:
        other.get_bucket_cors(Bucket="short-lived")
    assert fresh.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    preflight = requests.options(
        f"{s3server.url}/short-lived/x",
        headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert _code(preflight) == (403, "AccessForbidden")


def test_only_the_dashboards_origin_reads_its_form_posts_without_a_rule(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    dashboard = "http://dashboard.example:8000"
    server = start_objects_server(
        tmp_path_factory.mktemp("objects-cors-dash"), public_url=dashboard
    )
    try:
        s3 = server.client(server.issue("dash"), signature_version="s3v4")
        s3.create_bucket(Bucket="uploads")
        post = s3.generate_presigned_post("uploads", "a.txt")
        preflight = {"Access-Control-Request-Method": "POST"}
        for origin, allowed in ((dashboard, True), ("https://evil.example", False)):
            asked = requests.options(
                post["url"], headers={"Origin": origin, **preflight}, timeout=10
            )
            assert (asked.status_code == 200) is allowed
            sent = requests.post(
                post["url"], data=post["fields"], files={"file": b"x"},
                headers={"Origin": origin}, timeout=10,
            )  # fmt: skip
            assert sent.status_code == 204  # a form post is sent anyway; reading it is the point
            assert (sent.headers.get("Access-Control-Allow-Origin") == origin) is allowed
            assert ("ETag" in sent.headers.get("Access-Control-Expose-Headers", "")) is allowed
        url = s3.generate_presigned_url("list_objects_v2", Params={"Bucket": "uploads"})
        listing = requests.get(url, headers={"Origin": dashboard}, timeout=10)
        assert "Access-Control-Allow-Origin" not in listing.headers  # forms only
    finally:
        assert server.stop() in (0, -15), server.log_tail()
