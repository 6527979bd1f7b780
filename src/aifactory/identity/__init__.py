"""POSIX identities of workloads, and how the control plane becomes one.

Knows users and groups, not tenants: ``tenancy`` maps a tenant to a user,
``backends`` render an ``Identity`` their own way (setuid, ``sbatch --uid``,
a Pod's ``securityContext``).
"""

from aifactory.identity.posix import (
    USER_NAME_PATTERN,
    Identity,
    check_user_name,
    current_identity,
    lookup,
    workload_user,
)
from aifactory.identity.privilege import Privilege, PrivilegeMode, choose_privilege

__all__ = [
    "USER_NAME_PATTERN",
    "Identity",
    "Privilege",
    "PrivilegeMode",
    "check_user_name",
    "choose_privilege",
    "current_identity",
    "lookup",
    "workload_user",
]
