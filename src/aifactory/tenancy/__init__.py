"""Tenants, API keys, limits and the usage ledger."""

from aifactory.tenancy.audit import record_action
from aifactory.tenancy.identities import TenantIdentities
from aifactory.tenancy.keys import (
    IssuedKey,
    KeyAuthenticator,
    KeyScope,
    Principal,
    hash_key,
    issue_key,
    load_s3_master,
    s3_secret_for,
)
from aifactory.tenancy.ledger import UsageLedger
from aifactory.tenancy.limits import Admission, Limiter, period_bounds
from aifactory.tenancy.quotas import QuotaExceeded, Quotas
from aifactory.tenancy.roles import ROLES, Action, grants, may_mint

__all__ = [
    "ROLES",
    "Action",
    "Admission",
    "IssuedKey",
    "KeyAuthenticator",
    "KeyScope",
    "Limiter",
    "Principal",
    "QuotaExceeded",
    "Quotas",
    "TenantIdentities",
    "UsageLedger",
    "grants",
    "hash_key",
    "issue_key",
    "load_s3_master",
    "may_mint",
    "period_bounds",
    "record_action",
    "s3_secret_for",
]
