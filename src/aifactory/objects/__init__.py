"""S3-compatible object storage over a POSIX directory tree.

A bucket is a top-level directory under the root, an object key is a file
path in it: what boto3 uploads, a batch job reads as a plain file, and the
other way round. ``ObjectsService`` builds the S3 app (``ObjectsApp``) and
serves it on its own port; ``BucketsAPI`` adds admin routes to the control
plane; ``serve`` runs the S3 API alone.
"""

from aifactory.objects.admin.api import BucketsAPI
from aifactory.objects.admin.browser import caller_of
from aifactory.objects.errors import S3Error
from aifactory.objects.holdings import OtherHoldings
from aifactory.objects.posix.paths import RESERVED_PREFIX
from aifactory.objects.s3.app import ObjectsApp
from aifactory.objects.service import ObjectsService, serve

__all__ = [
    "RESERVED_PREFIX",
    "BucketsAPI",
    "ObjectsApp",
    "ObjectsService",
    "OtherHoldings",
    "S3Error",
    "caller_of",
    "serve",
]
