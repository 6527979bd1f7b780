"""POST Object: a browser form upload (``multipart/form-data``) to ``/bucket``.

::

    fields (key, policy, signature, x-amz-*, Content-Type, acl, ...) -> read whole (<= 64 KiB)
    file part                     -> headers read, then: signature, policy conditions,
                                     bucket access (the app), key = key with ${filename}
    file bytes                    -> streamed through PutObject's path (receive_object),
                                     counted against content-length-range as they come
    fields after the file         -> ignored, as S3 does

The form authenticates itself (no Authorization header): the policy signed
with SigV4 (``x-amz-credential``, ``x-amz-signature``) or SigV2
(``AWSAccessKeyId``, ``signature``). A form without a policy is an anonymous
request and goes through ``authenticate`` like any unsigned one.
"""

from __future__ import annotations

import hmac
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import quote

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Message, Receive

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.metadata import DEFAULT_CONTENT_TYPE
from aifactory.objects.posix.paths import check_key, is_directory_key
from aifactory.objects.s3 import sigv4
from aifactory.objects.s3.auth import Caller, Credentials, authenticate
from aifactory.objects.s3.context import Context
from aifactory.objects.s3.object_ops import checksum_headers, meta_from_request, receive_object
from aifactory.objects.s3.post_policy import PostPolicy, parse_policy, v2_signature, v4_signature
from aifactory.objects.s3.request import S3Request
from aifactory.objects.s3.responses import document, element, send_empty, send_xml

MAX_FIELDS_BYTES = 64 * 1024
_FORM_TYPE = "multipart/form-data"
# Form fields that become the object's headers (as PutObject's request headers).
_HEADER_FIELDS = frozenset(
    {"content-type", "cache-control", "content-disposition", "content-encoding", "expires",
     "content-language"}
)  # fmt: skip
_SUCCESS_STATUSES = frozenset({"200", "201", "204"})
_MESSAGE_BYTES = 64 * 1024

Event = tuple[str, bytes | dict[str, str] | None]


def is_form_upload(request: S3Request) -> bool:
    """Whether ``request`` is a POST Object (a form posted to a bucket)."""
    return (
        request.method == "POST"
        and bool(request.bucket)
        and not request.key
        and not request.params
        and request.header("content-type").lower().startswith(_FORM_TYPE)
    )


class FormStream:
    """The parts of a ``multipart/form-data`` body, parsed as it streams in."""

    def __init__(self, receive: Receive, content_type: str) -> None:
        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            raise S3Error("MalformedPOSTRequest", "The Content-Type names no boundary.")
        self._receive = receive
        self._events: deque[Event] = deque()
        self._ended = False
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[str, str] = {}
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": lambda: self._events.append(("end", None)),
                "on_end": lambda: self._events.append(("done", None)),
            },
        )

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        name = self._header_name.decode("latin-1").lower()
        self._headers[name] = self._header_value.decode("utf-8", "replace")
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        self._events.append(("part", self._headers))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(("data", bytes(data[start:end])))

    async def next(self) -> Event:
        """The next event: ``part`` (its headers), ``data``, ``end`` (of a part), ``done``.

        Raises:
            S3Error: MalformedPOSTRequest when the body ends mid-form, IncompleteBody
                when the client goes away.
        """
        while not self._events:
            if self._ended:
                raise S3Error("MalformedPOSTRequest", "The form ended before its last boundary.")
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise S3Error("IncompleteBody", "The client went away mid-upload.")
            try:
                self._parser.write(message.get("body", b""))
            except Exception as exc:  # the parser's own errors, whatever their class
                raise S3Error("MalformedPOSTRequest", f"The form is malformed: {exc}") from None
            self._ended = not message.get("more_body", False)
        return self._events.popleft()


@dataclass
class FormUpload:
    """A form whose fields were read and checked; its file is next in ``stream``."""

    caller: Caller
    fields: dict[str, str]
    key: str
    policy: PostPolicy | None
    stream: FormStream
    scheme: str = "http"
    received: int = 0

    @classmethod
    async def read(
        cls, request: S3Request, receive: Receive, credentials: Credentials, scheme: str = "http"
    ) -> FormUpload:
        """Read the fields up to the file, check the signature and the policy.

        Raises:
            S3Error: MalformedPOSTRequest, MaxPostPreDataLengthExceeded,
                IncorrectNumberOfFilesInPostRequest, InvalidArgument (a field missing),
                InvalidAccessKeyId, SignatureDoesNotMatch, InvalidPolicyDocument,
                AccessDenied (the policy refuses the form).
        """
        stream = FormStream(receive, request.header("content-type"))
        fields, filename = await _read_fields(stream)
        fields["bucket"] = request.bucket
        if "key" not in fields:
            raise S3Error("InvalidArgument", "Bucket POST must contain a field named 'key'.")
        fields["key"] = fields["key"].replace("${filename}", filename)
        if "policy" not in fields:
            caller, _ = await authenticate(request, credentials)
            return cls(caller, fields, fields["key"], None, stream, scheme)
        caller = await _signer(fields, credentials)
        policy = parse_policy(fields["policy"])
        policy.check(fields, datetime.now(UTC))
        return cls(caller, fields, fields["key"], policy, stream, scheme)

    async def receive_file(self) -> Message:
        """The file's bytes as ASGI request messages (what PutObject's path reads).

        Raises:
            S3Error: EntityTooLarge or EntityTooSmall against the policy's range.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            kind, data = await self.stream.next()
            if kind == "data":
                assert isinstance(data, bytes)
                chunks.append(data)
                size += len(data)
                self.received += len(data)
                if self.policy is not None:
                    self.policy.check_length(self.received, complete=False)
                if size >= _MESSAGE_BYTES:
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": True}
            elif kind == "end":
                if self.policy is not None:
                    self.policy.check_length(self.received, complete=True)
                while (await self.stream.next())[0] != "done":
                    pass  # fields after the file: ignored
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            else:
                raise S3Error("MalformedPOSTRequest", "The file part did not end.")

    async def serve(self, ctx: Context) -> None:
        """Store the file at the form's key and answer as ``success_action_*`` asks."""
        check_key(self.key)
        if is_directory_key(self.key):
            raise S3Error(
                "InvalidArgument",
                f"The key {self.key!r} ends in '/': a form uploads files, not folders.",
                resource=self.key,
            )
        original = ctx.request
        request = S3Request(
            "POST",
            original.raw_path,
            f"/{original.bucket}/{self.key}",
            original.bucket,
            self.key,
            [],
            self._headers(),
            False,
            original.request_id,
        )
        meta = meta_from_request(request)
        upload = replace(ctx, request=request, receive=self.receive_file)
        stored = await receive_object(upload, meta)
        headers = [*ctx.headers, (b"etag", stored.etag.encode()), *checksum_headers(stored)]
        redirect = self.fields.get("success_action_redirect") or self.fields.get("redirect")
        if redirect:
            target = _redirect_target(redirect, original.bucket, self.key, stored.etag)
            await send_empty(ctx.send, 303, [*headers, (b"location", target.encode())])
            return
        location = _location(original, self.key, self.scheme)
        headers.append((b"location", location.encode()))
        status = self.fields.get("success_action_status", "204")
        if status not in _SUCCESS_STATUSES:
            status = "204"
        if status == "201":
            body = document(
                "PostResponse",
                [
                    element("Location", location),
                    element("Bucket", original.bucket),
                    element("Key", self.key),
                    element("ETag", stored.etag),
                ],
            )
            await send_xml(ctx.send, 201, body, headers)
            return
        await send_empty(ctx.send, int(status), headers)

    def _headers(self) -> dict[str, list[str]]:
        headers = {
            name: [value]
            for name, value in self.fields.items()
            if name in _HEADER_FIELDS or name.startswith(("x-amz-meta-", "x-amz-checksum-"))
        }
        headers.setdefault("content-type", [DEFAULT_CONTENT_TYPE])
        if "acl" in self.fields:
            headers["x-amz-acl"] = [self.fields["acl"]]
        return headers


async def _read_fields(stream: FormStream) -> tuple[dict[str, str], str]:
    """The fields before the file (lower-case names; the first of a name wins) and its name."""
    fields: dict[str, str] = {}
    name = ""
    value: list[bytes] = []
    size = 0
    while True:
        kind, data = await stream.next()
        if kind == "part":
            assert isinstance(data, dict)
            _, options = parse_options_header(data.get("content-disposition", ""))
            name = options.get(b"name", b"").decode("utf-8", "replace").lower()
            if name == "file":
                filename = options.get(b"filename", b"").decode("utf-8", "replace")
                return fields, filename.replace("\\", "/").rpartition("/")[2]
            value = []
        elif kind == "data":
            assert isinstance(data, bytes)
            size += len(data)
            if size > MAX_FIELDS_BYTES:
                raise S3Error(
                    "MaxPostPreDataLengthExceededError",
                    f"The form's fields before the file are larger than {MAX_FIELDS_BYTES} bytes.",
                )
            value.append(data)
        elif kind == "end":
            try:
                fields.setdefault(name, b"".join(value).decode("utf-8"))
            except UnicodeDecodeError:
                raise S3Error("InvalidArgument", f"The field {name!r} is not UTF-8.") from None
        else:
            raise S3Error(
                "IncorrectNumberOfFilesInPostRequest",
                "POST requires exactly one file upload per request: add a field named 'file' "
                "after the others.",
            )


async def _signer(fields: dict[str, str], credentials: Credentials) -> Caller:
    """The caller whose secret signed the form's policy (SigV4 or SigV2).

    Raises:
        S3Error: InvalidArgument (a signing field missing), InvalidAccessKeyId,
            SignatureDoesNotMatch.
    """
    policy = fields["policy"]
    if "x-amz-signature" in fields or "x-amz-credential" in fields:
        if fields.get("x-amz-algorithm") != sigv4.ALGORITHM:
            raise S3Error("InvalidArgument", f"x-amz-algorithm must be {sigv4.ALGORITHM}.")
        credential = sigv4.parse_credential(fields.get("x-amz-credential", ""))
        if credential is None or not fields.get("x-amz-signature"):
            raise S3Error(
                "InvalidArgument",
                "A SigV4 form needs x-amz-credential (AKID/day/region/s3/aws4_request) and "
                "x-amz-signature.",
            )
        caller, secret = await _lookup(credentials, credential.access_key_id)
        expected = v4_signature(secret, credential, policy)
        presented = fields["x-amz-signature"]
    else:
        if not fields.get("awsaccesskeyid") or not fields.get("signature"):
            raise S3Error(
                "InvalidArgument",
                "Bucket POST must contain the fields 'AWSAccessKeyId' and 'signature' "
                "(or x-amz-credential and x-amz-signature) with its policy.",
            )
        caller, secret = await _lookup(credentials, fields["awsaccesskeyid"])
        expected = v2_signature(secret, policy)
        presented = fields["signature"]
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise S3Error(
            "SignatureDoesNotMatch",
            "The form's signature does not match its policy.",
            fix="sign the base64 policy exactly as sent, with the key's secret",
        )
    return caller


async def _lookup(credentials: Credentials, access_key_id: str) -> tuple[Caller, str]:
    found = await credentials.lookup(access_key_id)
    if found is None:
        raise S3Error(
            "InvalidAccessKeyId",
            f"The access key id {access_key_id[:40]!r} does not exist or was revoked.",
        )
    return found


def _location(request: S3Request, key: str, scheme: str) -> str:
    host = request.header("host") or "localhost"
    path = f"/{quote(key)}" if request.virtual_host else f"/{request.bucket}/{quote(key)}"
    return f"{scheme}://{host}{path}"


def _redirect_target(url: str, bucket: str, key: str, etag: str) -> str:
    query = f"bucket={quote(bucket, safe='')}&key={quote(key, safe='')}&etag={quote(etag, safe='')}"
    return f"{url}{'&' if '?' in url else '?'}{query}"
