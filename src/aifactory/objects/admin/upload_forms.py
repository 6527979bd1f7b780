"""Signed upload forms: a browser uploads straight to S3 without holding a secret.

The dashboard asks, with its API key, for a form to upload one file to one
key; the control plane signs a POST policy with that key's own S3 pair
(SigV4), bound to the bucket, the exact key, the content type and a quarter
of an hour. The browser posts the form and the file to the S3 endpoint,
which checks the signature, the policy and the bucket access again, as for
any form. The secret never leaves the control plane.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aifactory.errors import Conflict
from aifactory.objects.admin.browser import authorize_file_write
from aifactory.objects.s3 import sigv4
from aifactory.objects.s3.access import BucketRegistry
from aifactory.objects.s3.bucket_ops import REGION
from aifactory.objects.s3.post_policy import encode_policy, v4_signature
from aifactory.objects.s3.upload import MAX_SINGLE_UPLOAD_BYTES
from aifactory.store import Store
from aifactory.tenancy import Principal, s3_secret_for

FORM_LIFETIME = timedelta(minutes=15)


class UploadForms:
    """Signs POST Object forms for API-key callers.

    Args:
        store: Where API keys' S3 access key ids are.
        master: The secret S3 secrets derive from.
        registry: Bucket access checks (the same as S3's).
        endpoint: The S3 endpoint URL browsers post to.
    """

    def __init__(
        self, store: Store, master: bytes, registry: BucketRegistry, endpoint: str
    ) -> None:
        self._store = store
        self._master = master
        self._registry = registry
        self._endpoint = endpoint.rstrip("/")

    async def sign(
        self, principal: Principal, bucket: str, key: str, content_type: str
    ) -> dict[str, Any]:
        """A form uploading one file to ``bucket``/``key``, signed with the caller's S3 pair.

        Returns:
            ``{"url", "fields", "expires_at"}``: post the fields, then the file, to ``url``.

        Raises:
            S3Error: the caller may not write the bucket, or the key is not a file's.
            Conflict: the caller's API key has no S3 credentials.
        """
        await authorize_file_write(self._registry, principal, bucket, key)
        access_key_id = await asyncio.to_thread(self._store.s3_access_key_of, principal.key_id)
        if access_key_id is None:
            raise Conflict(
                "this API key has no S3 credentials, so it cannot sign an upload form.",
                fix="use a key made by `aifactory keys create`, which carries an S3 pair",
            )
        now = datetime.now(UTC)
        expires = now + FORM_LIFETIME
        credential = sigv4.Credential(access_key_id, now.strftime("%Y%m%d"), REGION, "s3")
        fields = {
            "key": key,
            "Content-Type": content_type,
            "x-amz-algorithm": sigv4.ALGORITHM,
            "x-amz-credential": f"{access_key_id}/{credential.scope}",
            "x-amz-date": now.strftime(sigv4.AMZ_DATE_FORMAT),
        }
        conditions: list[Any] = [
            {"bucket": bucket},
            *({name: value} for name, value in fields.items()),
            ["content-length-range", 0, MAX_SINGLE_UPLOAD_BYTES],
        ]
        policy = encode_policy(expires, conditions)
        secret = s3_secret_for(self._master, access_key_id)
        fields["policy"] = policy
        fields["x-amz-signature"] = v4_signature(secret, credential, policy)
        return {
            "url": f"{self._endpoint}/{bucket}",
            "fields": fields,
            "expires_at": expires.isoformat(),
        }
