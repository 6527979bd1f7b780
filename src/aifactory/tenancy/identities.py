"""Which Unix identity a tenant's workloads run as.

In order: the tenant's own mapping (``aif tenants create NAME --unix-user U
[--unix-group G]``), else the site's template (``AIFACTORY_TENANT_USER_TEMPLATE
= "aif-{tenant}"``), else the site's unprivileged workload user
(``AIFACTORY_WORKLOAD_USER``). Never the control plane's own user, unless the
operator chose the insecure single-user mode. Every name is checked against
the system's user database when it is used, so a mapping to a removed user
stops launches with a clear reason instead of falling back to someone else.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aifactory.errors import ConfigError
from aifactory.identity import Identity, Privilege, current_identity, lookup, workload_user
from aifactory.store import TenantRow

if TYPE_CHECKING:
    from aifactory.config import Settings

__all__ = ["TenantIdentities"]


class TenantIdentities:
    """Maps tenants to the POSIX identity their workloads run as.

    Args:
        privilege: How this control plane becomes an identity.
        workload_user: The user of tenants with no mapping of their own.
        template: A site rule such as ``aif-{tenant}``; empty: none.
        min_uid: The lowest uid a tenant may map to.
    """

    def __init__(
        self, privilege: Privilege, workload_user: str, template: str = "", min_uid: int = 1000
    ) -> None:
        self.privilege = privilege
        self._workload_user = workload_user
        self._template = template
        self._min_uid = min_uid

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantIdentities:
        """The mapping the site configured (privilege, workload user, template, lowest uid)."""
        return cls(
            settings.privilege,
            settings.workload_user,
            settings.tenant_user_template,
            settings.min_tenant_uid,
        )

    def of(self, tenant: TenantRow | None) -> Identity:
        """The identity ``tenant``'s workloads run as (blocking: reads the user database).

        Raises:
            ConfigError: the mapped user or group is unknown, a system user,
                or the control plane's own user; or the control plane cannot
                become it.
        """
        if self.privilege.single_user:
            return current_identity()
        if tenant is not None and tenant.unix_user:
            identity = lookup(tenant.unix_user, tenant.unix_group, min_uid=self._min_uid)
        elif tenant is not None and self._template:
            identity = lookup(self._template.format(tenant=tenant.name), min_uid=self._min_uid)
        else:
            identity = workload_user(self._workload_user)
        if identity.uid == os.getuid():
            raise ConfigError(
                f"tenant {tenant.name if tenant else '-'!r} maps to {identity.user!r}, the "
                "control plane's own user; tenants' code never runs as the control plane.",
                fix="map the tenant to another user (`aif tenants create NAME --unix-user USER`)",
            )
        self.privilege.check(identity)
        return identity

    def by_user(self, user: str) -> Identity | None:
        """The identity a recorded workload runs as, by its user name ("": the control plane's).

        Blocking: reads the user database. Raises ConfigError when the user is gone.
        """
        if not user or self.privilege.single_user:
            return None
        if user == self._workload_user:
            return workload_user(user)
        return lookup(user, min_uid=self._min_uid)

    def check_mapping(self, user: str, group: str | None) -> Identity:
        """The identity of a mapping an administrator asks for (checked as ``of`` would)."""
        identity = lookup(user, group, min_uid=self._min_uid)
        if identity.uid == os.getuid() and not self.privilege.single_user:
            raise ConfigError(
                f"Unix user {user!r} is the control plane's own user; tenants' code never "
                "runs as the control plane.",
                fix="map the tenant to another user",
            )
        return identity
