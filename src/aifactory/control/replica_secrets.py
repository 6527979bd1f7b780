"""The secrets a new replica starts with: owner-only files beside its launcher token.

- the launcher's registration token (every replica);
- an agent's secret environment (agents);
- the drain token its launcher presents when Slurm preempts it (lent replicas);
- the token its worker joins the functions broker with (pool replicas).

Only their hashes stay with the control plane (in memory and the store); the
files are read once by the replica's launcher, on the node.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from aifactory.control.lending import drain_token_file
from aifactory.control.planner import secret_env_file, worker_token_file
from aifactory.tenancy import hash_key


@dataclass(frozen=True)
class SecretHashes:
    """The hashes of a replica's tokens (empty where it has none)."""

    token: str
    drain_token: str = ""
    worker_token: str = ""


def write_replica_secrets(
    token_file: Path, *, agent_env: str | None, lent: bool, pool_worker: bool
) -> SecretHashes:
    """Write a new replica's secrets beside ``token_file``; returns their hashes."""
    token = _write_new_token(token_file)
    if agent_env is not None:
        _write_secret(secret_env_file(token_file), agent_env)
    return SecretHashes(
        token=token,
        drain_token=_write_new_token(drain_token_file(token_file)) if lent else "",
        worker_token=_write_new_token(worker_token_file(token_file)) if pool_worker else "",
    )


def discard_replica_secrets(token_file: Path) -> None:
    """Remove every secret file of the replica whose launcher token is ``token_file``."""
    for path in (
        token_file,
        worker_token_file(token_file),
        secret_env_file(token_file),
        drain_token_file(token_file),
    ):
        path.unlink(missing_ok=True)


def _write_new_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    _write_secret(path, token)
    return hash_key(token)


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.write_text(secret)
