"""The S3 protocol: requests parsed and authenticated, handlers, XML out.

``ObjectsApp`` is the raw ASGI app; the handlers (``bucket_ops``,
``object_ops``, ``multipart_ops``) work on the POSIX storage through
``Context``; ``access`` says who may use which bucket.
"""
