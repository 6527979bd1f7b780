"""Tenants, API keys, limits and the usage ledger."""

from aifactory.tenancy.audit import record_action
from aifactory.tenancy.identities import TenantIdentities
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
from aifactory.tenancy.limits import Admission, Limiter, period_bounds

__all__ = [
    "Admission",
    "IssuedKey",
    "KeyAuthenticator",
    "Limiter",
    "Principal",
    "Role",
    "TenantIdentities",
    "UsageLedger",
    "hash_key",
    "issue_key",
    "load_s3_master",
    "period_bounds",
    "record_action",
    "s3_secret_for",
]
