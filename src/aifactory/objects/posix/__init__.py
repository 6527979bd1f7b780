"""The POSIX side of object storage: buckets are directories, objects are files.

Names checked and mapped to paths, files written atomically and owned by the
bucket's tenant, metadata beside them, multipart staging, listings in S3
order, grants as ACLs. Nothing here speaks HTTP.
"""
