"""The control plane's side of object storage: admin routes and the dashboard's bucket browser.

Both take an API key's ``Principal``, not an S3 signature.
"""
