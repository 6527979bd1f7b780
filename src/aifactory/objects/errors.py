"""S3 errors: one class carrying an S3 error code, its HTTP status and message.

S3 clients branch on the error *code* (``NoSuchKey``, ``BucketNotEmpty``), so
the code is the identity of an error here; the table below gives each code
its status and default message. ``S3Error`` is an ``APIError``, so it sits in
the one error tree of ``aifactory.errors``; the S3 app turns it into an XML
error document in one place (``responses.send_error``).
"""

from __future__ import annotations

from aifactory.errors import APIError

__all__ = ["S3Error"]

_CODES: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied."),
    "AccessForbidden": (403, "CORSResponse: This CORS request is not allowed."),
    "AuthorizationQueryParametersError": (400, "The presigned URL is malformed."),
    "BadRequest": (400, "Bad request."),
    "BadDigest": (400, "The checksum you specified did not match what was received."),
    "BucketAlreadyExists": (409, "The requested bucket name is not available."),
    "BucketAlreadyOwnedByYou": (409, "You already own this bucket."),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty."),
    "DirectoryObjectContainsData": (400, "A directory object (key ending in '/') has no data."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed size."),
    "ExistingObjectIsDirectory": (409, "A directory exists at this key."),
    "IncompleteBody": (400, "The request body ended before the promised length."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (403, "The access key id you provided does not exist."),
    "InvalidArgument": (400, "Invalid argument."),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidDigest": (400, "The Content-MD5 or checksum you specified is not valid."),
    "InvalidPart": (400, "One or more of the specified parts could not be found."),
    "InvalidPartNumber": (416, "The requested partnumber is not satisfiable."),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order."),
    "InvalidRange": (416, "The requested range is not satisfiable."),
    "InvalidRequest": (400, "Invalid request."),
    "IncorrectNumberOfFilesInPostRequest": (400, "POST requires exactly one file upload."),
    "InvalidPolicyDocument": (400, "The content of the form does not meet the conditions."),
    "KeyTooLongError": (400, "Your key is too long."),
    "MalformedACLError": (400, "The XML you provided was not well-formed or valid as an ACL."),
    "MalformedPOSTRequest": (400, "The body of your POST request is not multipart/form-data."),
    "MalformedXML": (400, "The XML you provided was not well-formed."),
    "MaxPostPreDataLengthExceededError": (400, "The POST fields before the file are too large."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "NoSuchBucket": (404, "The specified bucket does not exist."),
    "NoSuchCORSConfiguration": (404, "The CORS configuration does not exist."),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (404, "The specified multipart upload does not exist."),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "NotImplemented": (501, "This operation is not implemented by aifactory."),
    "ObjectParentIsFile": (409, "A parent of this key is an object, not a directory."),
    "PreconditionFailed": (412, "At least one of the preconditions you specified did not hold."),
    "QuotaExceeded": (403, "The bucket's tenant would pass its storage quota."),
    "RequestTimeTooSkewed": (403, "The difference between request time and now is too large."),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match."),
    "SlowDown": (503, "Please reduce your request rate."),
    "TooManyBuckets": (400, "You have attempted to create more buckets than allowed."),
    "UnresolvableGrantByEmailAddress": (400, "The e-mail address does not match an account."),
    "XAmzContentSHA256Mismatch": (400, "The payload's SHA-256 does not match the header."),
}


class S3Error(APIError):
    """Raised by ``aifactory.objects`` for every request S3 answers with an error.

    Args:
        code: The S3 error code (a key of the table above).
        message: What went wrong; defaults to S3's usual message for ``code``.
        fix: What the client should do.
        resource: The bucket or key concerned, echoed in the error document.
    """

    def __init__(self, code: str, message: str = "", fix: str = "", *, resource: str = "") -> None:
        status, default = _CODES[code]
        super().__init__(message or default, fix)
        self.status_code = status
        self.code = code
        self.resource = resource
