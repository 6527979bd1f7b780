"""Real Unix users for the identity tests: two tenants' users and the site's workload user.

Created once per machine when the tests run as root (CI does); each test
that needs them asks for them by name.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

WORKLOAD_USER = "aif-workload"
TENANT_USERS = ("aif-alice", "aif-bob")


def ensure_users() -> None:
    """Create the workload user (a system user) and the two tenants' users, if missing."""
    if os.getuid() != 0:
        return
    wanted = [(WORKLOAD_USER, ["--system", "--user-group", "--no-create-home"])]
    wanted += [(user, ["--create-home", "--user-group"]) for user in TENANT_USERS]
    for user, options in wanted:
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", *options, "--shell", "/usr/sbin/nologin", user], check=True)


def make_traversable(path: Path) -> None:
    """Let other users pass through ``path`` and its parents (o+x), as a site's data disk does."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            os.chmod(folder, mode | 0o001)


def open_folder(parent: Path) -> Path:
    """A folder under ``parent`` that any workload's user may reach and write (sticky, 1777)."""
    folder = parent / "open"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o1777)
    make_traversable(folder)
    return folder
