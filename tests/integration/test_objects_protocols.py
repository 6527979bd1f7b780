"""Wire variants: boto3's aws-chunked uploads over HTTPS, signed streaming chunks, virtual hosts."""

from __future__ import annotations

import hashlib
import hmac
import io
import subprocess
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from .objects_server import S3Server, start_objects_server

MiB = 1024 * 1024
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    data_dir = tmp_path_factory.mktemp("objects-tls")
    cert, key = data_dir / "cert.pem", data_dir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = start_objects_server(
        data_dir,
        objects_tls_cert=str(cert),
        objects_tls_key=str(key),
        objects_domain="s3.test",
        drain_timeout_s="2",
    )
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def credentials(tls_server: S3Server) -> tuple[str, str]:
    return tls_server.issue("wire")


def test_boto3_over_https_streams_aws_chunked_with_a_crc_trailer(
    tls_server: S3Server, credentials: tuple[str, str]
) -> None:
    sent: list[dict[str, str]] = []
    s3 = tls_server.client(credentials)
    s3.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers))
    )
    s3.create_bucket(Bucket="wire")
    body = b"chunked " * (MiB // 4)
    put = s3.put_object(Bucket="wire", Key="streamed.bin", Body=body)
    headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in sent[-1].items()}
    assert headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert "aws-chunked" in headers["content-encoding"]
    assert put["ETag"] == '"' + hashlib.md5(body).hexdigest() + '"'
    stored = tls_server.root / "wire" / "streamed.bin"
    assert stored.read_bytes() == body
    got = s3.get_object(Bucket="wire", Key="streamed.bin", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert "ContentEncoding" not in got  # aws-chunked is never stored as the object's encoding
    crc = zlib.crc32(body).to_bytes(4, "big")
    import base64

    assert got["ChecksumCRC32"] == base64.b64encode(crc).decode()


class _StreamingSigV4(S3SigV4Auth):
    """botocore's signer, declaring a streaming payload as the Java and Go SDKs do."""

    def payload(self, request: AWSRequest) -> str:
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


def _signed_chunked_request(
    url: str, host: str, credentials: tuple[str, str], payload: bytes, chunk: int, tamper: bool
) -> httpx.Response:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload as the Java/Go SDKs send it.

    botocore signs the headers (the seed signature); the chunk signatures follow
    the AWS documentation, written out here independently of the server's code.
    """
    now = datetime.now(UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={
            "Host": host,
            "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(len(payload)),
            "X-Amz-Date": amz_date,
        },
    )
    _StreamingSigV4(Credentials(*credentials), "s3", "us-east-1").add_auth(request)
    seed = request.headers["Authorization"].rsplit("Signature=", 1)[1]

    def hmac256(key: bytes, text: str) -> bytes:
        return hmac.new(key, text.encode(), hashlib.sha256).digest()

    key = ("AWS4" + credentials[1]).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        key = hmac256(key, part)
    scope = f"{day}/us-east-1/s3/aws4_request"
    empty = hashlib.sha256(b"").hexdigest()
    previous, body = seed, b""
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] + [b""]
    for piece in pieces:
        text = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, empty,
             hashlib.sha256(piece).hexdigest()]
        )  # fmt: skip
        previous = hmac256(key, text).hex()
        data = piece.replace(b"A", b"B") if tamper and piece else piece
        body += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(piece), previous.encode(), data)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    headers["Host"] = host
    headers["Content-Length"] = str(len(body))
    return httpx.put(url, headers=headers, content=body, verify=False)


def test_signed_streaming_chunks(tls_server: S3Server, credentials: tuple[str, str]) -> None:
    s3 = tls_server.client(credentials)
    s3.create_bucket(Bucket="signed")
    payload = b"A" * 200_000
    host = f"127.0.0.1:{tls_server.port}"
    url = f"{tls_server.url}/signed/chunks.bin"
    response = _signed_chunked_request(url, host, credentials, payload, 65536, tamper=False)
    assert response.status_code == 200, response.text
    assert (tls_server.root / "signed" / "chunks.bin").read_bytes() == payload
    url = f"{tls_server.url}/signed/tampered.bin"
    response = _signed_chunked_request(url, host, credentials, payload, 65536, tamper=True)
    assert response.status_code == 403 and b"SignatureDoesNotMatch" in response.content
    assert not (tls_server.root / "signed" / "tampered.bin").exists()


def test_virtual_host_style(tls_server: S3Server, credentials: tuple[str, str]) -> None:
    s3 = tls_server.client(credentials)
    s3.create_bucket(Bucket="vhost")
    s3.put_object(Bucket="vhost", Key="dir/file.txt", Body=b"by host")
    host = f"vhost.s3.test:{tls_server.port}"
    request = AWSRequest(method="GET", url=f"https://{host}/dir/file.txt", headers={"Host": host})
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(b"").hexdigest()
    S3SigV4Auth(Credentials(*credentials), "s3", "us-east-1").add_auth(request)
    response = httpx.get(
        f"{tls_server.url}/dir/file.txt", headers=dict(request.headers.items()), verify=False
    )
    assert response.status_code == 200, response.text
    assert response.content == b"by host"


def test_bad_payload_hash_is_rejected_and_not_stored(
    tls_server: S3Server, credentials: tuple[str, str]
) -> None:
    s3 = tls_server.client(credentials)
    s3.create_bucket(Bucket="hashes")
    host = f"127.0.0.1:{tls_server.port}"
    url = f"{tls_server.url}/hashes/liar.bin"
    request = AWSRequest(method="PUT", url=url, data=b"claimed", headers={"Host": host})
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(b"claimed").hexdigest()
    S3SigV4Auth(Credentials(*credentials), "s3", "us-east-1").add_auth(request)
    response = httpx.put(
        url, headers=dict(request.headers.items()), content=b"delivered", verify=False
    )
    assert response.status_code == 400 and b"XAmzContentSHA256Mismatch" in response.content
    assert not (tls_server.root / "hashes" / "liar.bin").exists()
    with pytest.raises(ClientError):
        s3.head_object(Bucket="hashes", Key="liar.bin")


def test_multipart_over_https_lands_in_place_from_aws_chunked_parts(
    tls_server: S3Server, credentials: tuple[str, str]
) -> None:
    s3 = tls_server.client(credentials)
    s3.create_bucket(Bucket="wire-parts")
    body = bytes(range(256)) * (11 * MiB // 256)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_fileobj(io.BytesIO(body), "wire-parts", "big.bin", Config=config)
    assert s3.head_object(Bucket="wire-parts", Key="big.bin")["ETag"].endswith('-3"')
    assert (tls_server.root / "wire-parts" / "big.bin").read_bytes() == body
