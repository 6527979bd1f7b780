"""A POSIX identity (user, group, supplementary groups), looked up in the system's user database.

Workloads run as one of these; the control plane never runs tenant code as
itself. A name is checked before it is looked up, so a hostile name (``../``,
``;``, ``$(…)``, a newline) never reaches a command line or a path, and
system users (``root``, ``daemon``…, below ``min_uid``) are refused unless
the site named the user itself as its workload user.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from dataclasses import dataclass

from aifactory.errors import ConfigError

__all__ = [
    "USER_NAME_PATTERN",
    "Identity",
    "check_user_name",
    "current_identity",
    "lookup",
    "workload_user",
]

# POSIX portable user names as useradd accepts them by default, at most 32 characters.
USER_NAME_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
_USER_NAME = re.compile(USER_NAME_PATTERN)
# nobody (65534) and above: the kernel's overflow ids, never one tenant's own.
_OVERFLOW_UID = 65534


@dataclass(frozen=True)
class Identity:
    """Who a workload runs as.

    Attributes:
        user: The user name.
        uid: Its user id.
        group: The primary group's name.
        gid: The primary group's id.
        groups: Supplementary group ids (the user's own memberships).
        home: The user's home directory, as the user database has it.
    """

    user: str
    uid: int
    group: str
    gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"

    def describe(self) -> str:
        """``user(uid):group(gid)``, for status lines and messages."""
        return f"{self.user}({self.uid}):{self.group}({self.gid})"

    def env(self) -> dict[str, str]:
        """The login variables a process of this identity expects."""
        return {"USER": self.user, "LOGNAME": self.user, "HOME": self.home}


def check_user_name(name: str, what: str = "Unix user") -> str:
    """``name`` if it is a plain POSIX user or group name.

    Raises:
        ConfigError: naming the bad value and what is accepted.
    """
    if not isinstance(name, str) or not _USER_NAME.match(name):
        raise ConfigError(
            f"{what} {name!r} is not a valid name.",
            fix="use lower case letters, digits, '_' and '-', starting with a letter or '_', "
            "at most 32 characters",
        )
    return name


def lookup(user: str, group: str | None = None, *, min_uid: int = 1000) -> Identity:
    """The identity of ``user`` (with ``group`` as primary group, else its own).

    Raises:
        ConfigError: a bad name, a user or group the system does not know, a
            system user (uid below ``min_uid``, root always), or a group the
            user is not a member of.
    """
    check_user_name(user)
    if group is not None:
        check_user_name(group, "Unix group")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(
            f"Unix user {user!r} does not exist on this machine.",
            fix=f"create it (`useradd --create-home {user}`) or map the tenant to an existing user",
        ) from None
    if entry.pw_uid == 0 or entry.pw_uid < min_uid or entry.pw_uid >= _OVERFLOW_UID:
        raise ConfigError(
            f"Unix user {user!r} is a system user (uid {entry.pw_uid}); tenants' code never "
            "runs as one.",
            fix=f"map the tenant to a regular user (uid >= {min_uid}, set by "
            "AIFACTORY_MIN_TENANT_UID)",
        )
    groups = _memberships(entry.pw_name, entry.pw_gid)
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(
                f"Unix group {group!r} does not exist on this machine.",
                fix=f"create it (`groupadd {group}`) or leave the group out",
            ) from None
        if gid not in groups and gid != entry.pw_gid:
            raise ConfigError(
                f"Unix user {user!r} is not a member of group {group!r}.",
                fix=f"add it (`usermod -aG {group} {user}`) or name one of its groups",
            )
        if gid == 0:
            raise ConfigError(f"Unix group {group!r} is root's group; pick another.")
    return _identity(entry, gid, groups)


def workload_user(user: str) -> Identity:
    """The site's workload user: a system user is allowed here, root never.

    Raises:
        ConfigError: a bad name, an unknown user, or root.
    """
    check_user_name(user)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(
            f"the workload user {user!r} (for tenants with no Unix user of their own) does "
            "not exist on this machine.",
            fix=f"create it (`useradd --system --user-group --no-create-home {user}`), set "
            "AIFACTORY_WORKLOAD_USER to an existing unprivileged user, or map every tenant "
            "to a user (`aif tenants create NAME --unix-user USER`)",
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ConfigError(
            f"the workload user {user!r} is root (or in root's group); tenants' code never "
            "runs as root.",
            fix="set AIFACTORY_WORKLOAD_USER to an unprivileged user",
        )
    return _identity(entry, entry.pw_gid, _memberships(entry.pw_name, entry.pw_gid))


def current_identity() -> Identity:
    """The identity this process runs as (the control plane's own)."""
    uid, gid = os.getuid(), os.getgid()
    try:
        entry = pwd.getpwuid(uid)
        user, home = entry.pw_name, entry.pw_dir
    except KeyError:
        user, home = str(uid), "/"
    groups = tuple(sorted(g for g in os.getgroups() if g != gid))
    return Identity(user=user, uid=uid, group=_group_name(gid), gid=gid, groups=groups, home=home)


def _identity(entry: pwd.struct_passwd, gid: int, memberships: set[int]) -> Identity:
    return Identity(
        user=entry.pw_name,
        uid=entry.pw_uid,
        group=_group_name(gid),
        gid=gid,
        groups=tuple(sorted(g for g in memberships if g != gid)),
        home=entry.pw_dir,
    )


def _memberships(user: str, primary: int) -> set[int]:
    return set(os.getgrouplist(user, primary))


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
