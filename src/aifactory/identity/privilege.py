"""How this control plane becomes a workload's identity: as root, through a prefix, or not at all.

- ``root``: the control plane runs as root (a service node's daemon). It
  starts processes through util-linux's ``setpriv`` with the identity's uid,
  gid and supplementary groups and nothing else (no capabilities, no new
  privileges: a setuid program inside cannot raise them), and hands files
  over with ``chown``. (``setpriv`` rather than ``subprocess``'s ``user=``:
  the control plane's event loop, uvloop, does not take those arguments.)
- ``prefix``: an unprivileged control plane with a site-allowed privileged
  launcher, a command template such as ``sudo -n -u {user} --`` (a sudoers
  rule lets the control plane's user run exactly that). Files are handed over
  by running a small helper through the same prefix, so they are created by
  the identity itself, inside its own directory.
- ``single-user``: everything runs as the control plane's own user. Only an
  operator's explicit ``AIFACTORY_INSECURE_SINGLE_USER=1`` selects it (a
  personal laptop); tenants' code can then read every secret the control
  plane keeps, and ``aif status`` says so.

Without root, a prefix or single-user mode nothing of a tenant starts, and
the refusal says what to configure.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aifactory.errors import ConfigError
from aifactory.identity.handoff import NOT_A_FILE
from aifactory.identity.posix import Identity, current_identity

__all__ = ["Privilege", "PrivilegeMode", "choose_privilege"]

PrivilegeMode = Literal["root", "prefix", "single-user"]

_HANDOFF_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Privilege:
    """How processes and files become an identity's.

    Attributes:
        mode: ``root``, ``prefix`` or ``single-user``.
        prefix: The launcher template (``prefix`` mode), split into words,
            with ``{user}`` and ``{group}`` placeholders.
        data_dir: The control plane's data directory (root and single-user
            modes keep each identity's directory under it).
    """

    mode: PrivilegeMode
    data_dir: Path
    prefix: tuple[str, ...] = ()

    @property
    def single_user(self) -> bool:
        """Whether workloads run as the control plane's own user (unsafe)."""
        return self.mode == "single-user"

    def command(self, identity: Identity, argv: list[str] | tuple[str, ...]) -> list[str]:
        """``argv`` behind the launch prefix (prefix mode), else unchanged.

        For schedulers' commands (``sbatch``), which root runs with ``--uid`` instead.
        """
        if self.mode != "prefix" or identity.uid == os.getuid():
            return list(argv)
        words = [w.format(user=identity.user, group=identity.group) for w in self.prefix]
        return [*words, *argv]

    def process_command(self, identity: Identity, argv: list[str] | tuple[str, ...]) -> list[str]:
        """``argv`` as a process of this machine started as ``identity`` (local workloads).

        Root: behind ``setpriv`` with exactly the identity's ids; a prefix: behind it.
        """
        if self.mode != "root" or identity.uid == os.getuid():
            return self.command(identity, argv)
        groups = ",".join(str(g) for g in identity.groups)
        return [
            "setpriv",
            f"--reuid={identity.uid}",
            f"--regid={identity.gid}",
            f"--groups={groups}" if groups else "--clear-groups",
            "--no-new-privs",
            "--",
            *argv,
        ]

    def environment(self, identity: Identity, base: dict[str, str]) -> dict[str, str]:
        """``base`` with the identity's login variables (its own HOME, USER, LOGNAME).

        The control plane's own settings (``AIFACTORY_*``: an API key, a
        database URL with its password) never reach another identity.
        """
        if identity.uid == os.getuid():
            return dict(base)
        kept = {k: v for k, v in base.items() if not k.startswith("AIFACTORY_")}
        return {**kept, **identity.env()}

    def workload_dir(self, identity: Identity) -> Path:
        """The identity's own directory: its secrets, model cache and spill files.

        Root and single-user modes keep it under ``DATA_DIR/identities``;
        with a prefix it lies in the identity's home (the control plane
        cannot create files it may read there otherwise).
        """
        if self.mode == "prefix" and identity.uid != os.getuid():
            return Path(identity.home) / ".aifactory"
        return self.data_dir / "identities" / identity.user

    def make_dir(self, identity: Identity, path: Path, mode: int = 0o700) -> None:
        """Create ``path`` (and missing parents up to the workload dir) owned by ``identity``.

        Blocking: call from a thread.
        """
        if self.mode == "prefix" and identity.uid != os.getuid():
            self._handoff(identity, ["dir", str(path), f"{mode:o}"], b"")
            return
        top = self.workload_dir(identity)
        top.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        parts = path.relative_to(top).parts
        for folder in [top, *(top.joinpath(*parts[: i + 1]) for i in range(len(parts)))]:
            folder.mkdir(exist_ok=True, mode=mode)
            os.chmod(folder, mode)
            if self.mode == "root":
                os.chown(folder, identity.uid, identity.gid)

    def give_file(self, identity: Identity, path: Path, text: str, mode: int = 0o600) -> None:
        """Write ``text`` to ``path``, a file only ``identity`` (and root) can read.

        Blocking: call from a thread. The folder must be the identity's (``make_dir``).
        """
        if self.mode == "prefix" and identity.uid != os.getuid():
            self._handoff(identity, ["file", str(path), f"{mode:o}"], text.encode())
            return
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(descriptor, "w") as handle:
            if self.mode == "root":
                os.fchown(handle.fileno(), identity.uid, identity.gid)
            os.fchmod(handle.fileno(), mode)
            handle.write(text)

    def remove_file(self, identity: Identity, path: Path) -> None:
        """Delete ``path`` if it is there (blocking)."""
        if self.mode == "prefix" and identity.uid != os.getuid():
            self._handoff(identity, ["remove", str(path), "0"], b"")
            return
        path.unlink(missing_ok=True)

    def through_prefix(self, identity: Identity) -> bool:
        """Whether acting as ``identity`` goes through the launch prefix (not as root or itself)."""
        return self.mode == "prefix" and identity.uid != os.getuid()

    def read_file(self, identity: Identity, path: Path, offset: int) -> tuple[int, bytes]:
        """The size of ``path`` and its bytes from ``offset``, read by ``identity`` itself.

        Through the launch prefix: an unprivileged control plane cannot read
        the identity's own folder. A file that is not there reads as
        ``(0, b"")``. Blocking.

        Raises:
            ValueError: ``path`` is a link or not a regular file.
            ConfigError: the prefix could not act as ``identity``.
        """
        handoff = [sys.executable, "-m", "aifactory.identity.handoff", "read", str(path)]
        done = self._run(identity, self.command(identity, [*handoff, str(offset)]), b"")
        if done.returncode == NOT_A_FILE:
            raise ValueError(done.stderr.decode(errors="replace").strip()[:300])
        self._refused(identity, done)
        if not done.stdout:
            return 0, b""
        size, _, data = done.stdout.partition(b"\n")
        return int(size), data

    def check(self, identity: Identity) -> None:
        """Raise unless this control plane can run processes as ``identity``.

        Raises:
            ConfigError: what to configure.
        """
        if self.mode == "prefix" and not self.prefix and identity.uid != os.getuid():
            me = current_identity().user
            raise ConfigError(
                f"this control plane runs as {me!r}, not root, and has no launch prefix: it "
                f"cannot start workloads as {identity.user!r}, and never runs tenants' code "
                "as itself.",
                fix="run it as root, set AIFACTORY_LAUNCH_PREFIX='sudo -n -u {user} --' with "
                "the sudoers rule from the README, or, on a personal machine only, set "
                "AIFACTORY_INSECURE_SINGLE_USER=1",
            )

    def _handoff(self, identity: Identity, args: list[str], data: bytes) -> None:
        argv = self.command(identity, [sys.executable, "-m", "aifactory.identity.handoff", *args])
        self._refused(identity, self._run(identity, argv, data))

    def _run(
        self, identity: Identity, argv: list[str], data: bytes
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                argv, input=data, capture_output=True, timeout=_HANDOFF_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(
                f"could not run {shlex.join(argv[:4])}… as {identity.user}: {exc}.",
                fix="check AIFACTORY_LAUNCH_PREFIX and the sudoers rule in the README",
            ) from exc

    def _refused(self, identity: Identity, done: subprocess.CompletedProcess[bytes]) -> None:
        if done.returncode != 0:
            raise ConfigError(
                f"the launch prefix could not act as {identity.user} "
                f"(exit {done.returncode}): {done.stderr.decode(errors='replace').strip()[:300]}",
                fix="check AIFACTORY_LAUNCH_PREFIX and the sudoers rule in the README",
            )


def choose_privilege(data_dir: Path, launch_prefix: str, single_user: bool) -> Privilege:
    """The privilege this control plane has, from its uid and the site's settings.

    Raises:
        ConfigError: a prefix without ``{user}``.
    """
    if single_user:
        return Privilege("single-user", data_dir)
    if os.getuid() == 0:
        return Privilege("root", data_dir)
    if launch_prefix:
        words = tuple(shlex.split(launch_prefix))
        if not any("{user}" in w for w in words):
            raise ConfigError(
                f"AIFACTORY_LAUNCH_PREFIX {launch_prefix!r} does not name the user.",
                fix="include {user}, e.g. `sudo -n -u {user} --`",
            )
        return Privilege("prefix", data_dir, words)
    return Privilege("prefix", data_dir, ())
