"""Tenants, API keys and the usage ledger."""

from aifactory.tenancy.keys import (
    IssuedKey,
    KeyAuthenticator,
    Principal,
    Role,
    hash_key,
    issue_key,
    load_s3_master,
    s3_secret_for,
)
from aifactory.tenancy.ledger import UsageLedger

__all__ = [
    "IssuedKey",
    "KeyAuthenticator",
    "Principal",
    "Role",
    "UsageLedger",
    "hash_key",
    "issue_key",
    "load_s3_master",
    "s3_secret_for",
]
