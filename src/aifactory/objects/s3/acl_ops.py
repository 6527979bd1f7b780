"""ACL handlers: Get/PutBucketAcl, Get/PutObjectAcl, and the ACL headers of writes.

Only the bucket's tenant (or an admin) reads or changes ACLs; grants are
checked and translated by ``acl``. A bucket's grants live in the store (and
reach the filesystem as POSIX ACLs through ``BucketSharing``); an object's
in its metadata record, and a public-read object file is readable by
others on the filesystem too (mode ``o+r``, with a root control plane).
"""

from __future__ import annotations

import os

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.ownership import object_mode
from aifactory.objects.posix.paths import check_key, is_directory_key
from aifactory.objects.posix.storage import FileStore
from aifactory.objects.s3 import acl
from aifactory.objects.s3.context import Context
from aifactory.objects.s3.responses import send_empty, send_xml

_MAX_ACL_BYTES = 64 * 1024


async def get_bucket_acl(ctx: Context) -> None:
    """GET /bucket?acl."""
    owner = await ctx.services.buckets.owner(ctx.caller, ctx.request.bucket)
    record = await ctx.services.buckets.record(ctx.request.bucket)
    grants = record.grants if record is not None else {}
    await send_xml(ctx.send, 200, acl.policy_xml(owner, grants), ctx.headers)


async def put_bucket_acl(ctx: Context) -> None:
    """PUT /bucket?acl, with ACL headers or an AccessControlPolicy body."""
    owner = await ctx.services.buckets.owner(ctx.caller, ctx.request.bucket)
    grants = await _asked(ctx, owner, bucket=True)
    await ctx.services.buckets.set_grants(ctx.request.bucket, grants)
    await send_empty(ctx.send, 200, ctx.headers)


async def get_object_acl(ctx: Context) -> None:
    """GET /bucket/key?acl."""
    check_key(ctx.request.key)
    owner = await ctx.services.buckets.owner(ctx.caller, ctx.request.bucket)
    info = await ctx.run_quick(ctx.files.head, ctx.request.bucket, ctx.request.key)
    await send_xml(ctx.send, 200, acl.policy_xml(owner, info.meta.acl), ctx.headers)


async def put_object_acl(ctx: Context) -> None:
    """PUT /bucket/key?acl."""
    check_key(ctx.request.key)
    owner = await ctx.services.buckets.owner(ctx.caller, ctx.request.bucket)
    grants = await _asked(ctx, owner, bucket=False)
    await ctx.run(set_object_acl, ctx.files, ctx.request.bucket, ctx.request.key, grants)
    await send_empty(ctx.send, 200, ctx.headers)


async def bucket_grants_of_create(ctx: Context) -> acl.Grants | None:
    """The grants a CreateBucket's headers ask for (the caller will own the bucket)."""
    exists = ctx.services.buckets.tenant_exists
    return await ctx.run(acl.from_headers, ctx.request, exists, ctx.caller.tenant, True)


async def object_grants_of_write(ctx: Context) -> dict[str, str]:
    """The grants a PutObject, CopyObject or CreateMultipartUpload asks for (none: private).

    Raises:
        S3Error: AccessDenied when a tenant writing through a grant asks for
            more than private: the bucket's tenant alone manages ACLs.
    """
    request = ctx.request
    if not request.header("x-amz-acl") and not any(
        name.startswith("x-amz-grant-") for name in request.headers
    ):
        return {}
    record = await ctx.services.buckets.record(request.bucket)
    owner = record.tenant if record is not None else ctx.caller.tenant
    exists = ctx.services.buckets.tenant_exists
    grants = await ctx.run(acl.from_headers, request, exists, owner, False) or {}
    if grants:
        await ctx.services.buckets.owner(ctx.caller, request.bucket)
    return grants


async def _asked(ctx: Context, owner: str, bucket: bool) -> acl.Grants:
    exists = ctx.services.buckets.tenant_exists
    body = await ctx.read_small_body(_MAX_ACL_BYTES, too_large="MalformedACLError")
    from_headers = await ctx.run(acl.from_headers, ctx.request, exists, owner, bucket)
    if from_headers is not None:
        if body.strip():
            raise S3Error(
                "InvalidRequest",
                "Send ACL headers or an AccessControlPolicy body, not both.",
            )
        return from_headers
    if not body.strip():
        raise S3Error(
            "InvalidRequest",
            "Send x-amz-acl, x-amz-grant-* headers or an AccessControlPolicy body.",
        )
    return await ctx.run(acl.from_xml, body, exists, owner, bucket)


def set_object_acl(files: FileStore, bucket: str, key: str, grants: acl.Grants) -> None:
    """Replace an object's grants in its record, under the key's lock (blocking).

    With a root control plane a file follows: others may read it when it is public.
    """
    with files.publish_lock(bucket, key):
        fd, info = files.open(bucket, key)
        try:
            info.meta.acl = dict(grants)
            owner = files.owners.of(bucket)
            files.meta.rewrite(bucket, key, fd, info.meta, owner)
            if owner is not None and not is_directory_key(key):
                os.fchmod(fd, object_mode(info.meta.public))
            if info.meta.public:
                files.open_way(bucket, key)
        finally:
            os.close(fd)
