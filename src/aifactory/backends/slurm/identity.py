"""Slurm's commands as a workload's identity, never as the control plane's own user.

How the control plane becomes the identity (its ``Privilege``)::

    mode         submit                                   cancel, read the output
    root         sbatch --uid=UID --gid=GID --chdir=DIR   scancel, open (root can)
    prefix       sudo -n -u USER -- sbatch --chdir=DIR    sudo -n -u USER -- scancel|tail
    single-user  sbatch (as the control plane)            scancel, open

Slurm then knows the job as the tenant's: ``squeue -u``/``sacct -u`` show
it, and Slurm's limits and fair-share apply per user. Every command stays an
argv list, so no name or path ever reaches a shell.

sbatch hands its own environment and working directory on to the job. A job
submitted for an identity therefore starts in a folder of its own
(``--chdir``: the control plane's directory is not the identity's to enter)
with the identity's HOME, USER and LOGNAME, and without the control plane's
``AIFACTORY_*`` settings (an API key may be among them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aifactory.errors import BackendError, ConfigError
from aifactory.identity import Identity, Privilege, lookup

__all__ = ["Command", "job_owner", "sbatch_command", "scancel_command", "tail_command"]


@dataclass(frozen=True)
class Command:
    """A Slurm command line and its environment (None: the control plane's own)."""

    argv: list[str]
    env: dict[str, str] | None = None


def sbatch_command(
    privilege: Privilege, identity: Identity | None, options: list[str], workdir: Path
) -> Command:
    """``sbatch OPTIONS`` submitting as ``identity`` (the script goes on its stdin).

    ``identity`` None (single-user mode) or the control plane's own user
    submits as the control plane, as before identities existed.

    Raises:
        ConfigError: this control plane cannot act as ``identity`` (not root, no prefix).
    """
    if identity is None or privilege.single_user or identity.uid == os.getuid():
        return Command(["sbatch", *options])
    privilege.check(identity)
    env = privilege.environment(identity, dict(os.environ))
    argv = ["sbatch", f"--chdir={workdir}", *options]
    if privilege.mode == "root":
        return Command([argv[0], f"--uid={identity.uid}", f"--gid={identity.gid}", *argv[1:]], env)
    return Command(privilege.command(identity, argv), env)


def scancel_command(privilege: Privilege, owner: Identity | None, job_id: str) -> list[str]:
    """``scancel JOB_ID`` as one who may: root itself, else the job's owner through the prefix.

    Raises:
        ConfigError: this control plane cannot act as ``owner`` (not root, no prefix).
    """
    argv = ["scancel", job_id]
    if owner is None or privilege.mode != "prefix":
        return argv
    privilege.check(owner)
    return privilege.command(owner, argv)


def tail_command(
    privilege: Privilege, owner: Identity | None, path: Path, lines: int
) -> list[str] | None:
    """``tail`` of ``path`` as ``owner`` when only it can read the file, else None (read it).

    Through a prefix the job's output lies in the identity's own 0700 folder,
    which the control plane cannot enter; root and single-user mode can.
    """
    if owner is None or privilege.mode != "prefix" or owner.uid == os.getuid():
        return None
    return privilege.command(owner, ["tail", "-n", str(lines), "--", str(path)])


def job_owner(job_id: str, user: str, group: str) -> Identity:
    """The identity Slurm names as ``job_id``'s owner (an adopted job's, to cancel it as).

    Raises:
        BackendError: the user (or group) is unknown here, or is root.
    """
    try:
        return lookup(user, group or None, min_uid=1)
    except ConfigError as exc:
        raise BackendError(
            f"Slurm job {job_id} belongs to {user!r}, whom this control plane cannot act as: "
            f"{exc.message}",
            fix=f"cancel it as root (`scancel {job_id}`)",
        ) from exc
