"""The control plane's data directory, locked down: its secrets are its own.

Everything the control plane keeps (admin key, S3 master secret, database,
server logs) is mode 0600 in folders of mode 0700, created under a umask of
077. The data directory itself is 0711: workloads may pass through it to
their own folder under ``identities/`` (0700, owned by each identity), but
cannot list it or open anything else. A directory left by an older version
with looser modes is tightened at start.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from aifactory.config import Settings

__all__ = ["lock_down"]

_PRIVATE_FILES = (
    "admin.key",
    "objects.key",
    "functions-broker.key",
    "admin-s3-credentials",
    "aifactory.db",
    "aifactory.db-wal",
    "aifactory.db-shm",
    "instance",
    "server.pid",
)


def lock_down(settings: Settings) -> None:
    """Make the data directory and what the control plane keeps there private (blocking)."""
    os.umask(0o077)
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    _chmod(data, 0o711)
    settings.identities_dir.mkdir(exist_ok=True)
    _chmod(settings.identities_dir, 0o711)
    for name in _PRIVATE_FILES:
        _chmod(data / name, 0o600)
    for folder in (settings.logs_dir, settings.cache_dir, data / "run"):
        if folder.is_dir():
            _chmod(folder, 0o700)
    if settings.objects_dir.is_dir() or not settings.objects_root:
        settings.objects_dir.mkdir(exist_ok=True)
        _chmod(settings.objects_dir, 0o711)


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_uid == os.getuid():
            os.chmod(path, mode)
