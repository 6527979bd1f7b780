"""What a new replica starts with: its folders and its secrets, all its identity's own.

- the launcher's registration token (every replica);
- an agent's secret environment (agents);
- the drain token its launcher presents when Slurm preempts it (lent replicas);
- the token its worker joins the functions broker with (pool replicas).

They lie in the identity's own directory (``secrets/``, mode 0700, files
0600, owned by the identity the replica runs as), beside its log folder and
model cache: another tenant's workload cannot read them, and the replica
cannot read anyone else's. Only their hashes stay with the control plane (in
memory and the store); the files are read once by the replica's launcher.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from aifactory.backends import AllocationRequest
from aifactory.control.lending import drain_token_file
from aifactory.control.planner import secret_env_file, worker_token_file
from aifactory.identity import Identity, Privilege, current_identity
from aifactory.tenancy import hash_key

__all__ = ["SecretHashes", "discard_replica_secrets", "prepare_replica"]


@dataclass(frozen=True)
class SecretHashes:
    """The hashes of a replica's tokens (empty where it has none)."""

    token: str
    drain_token: str = ""
    worker_token: str = ""


def prepare_replica(
    privilege: Privilege,
    request: AllocationRequest,
    *,
    agent_env: str | None,
    lent: bool,
    pool_worker: bool,
) -> SecretHashes:
    """Make the replica's folders and write its secrets (blocking); returns their hashes.

    The launcher token is ``request.secret_files[0]``; the others lie beside it.
    """
    identity = request.identity or current_identity()
    token_file = request.secret_files[0]
    privilege.make_dir(identity, token_file.parent)
    if request.log_path.is_relative_to(privilege.workload_dir(identity)):
        privilege.make_dir(identity, request.log_path.parent)
    else:  # the control plane's own log folder (a local replica behind a launch prefix)
        request.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = _write_new_token(privilege, identity, token_file)
    if agent_env is not None:
        privilege.give_file(identity, secret_env_file(token_file), agent_env)
    return SecretHashes(
        token=token,
        drain_token=(
            _write_new_token(privilege, identity, drain_token_file(token_file)) if lent else ""
        ),
        worker_token=(
            _write_new_token(privilege, identity, worker_token_file(token_file))
            if pool_worker
            else ""
        ),
    )


def discard_replica_secrets(privilege: Privilege, request: AllocationRequest) -> None:
    """Remove every secret file of a replica that did not start (blocking)."""
    identity = request.identity or current_identity()
    token_file = request.secret_files[0]
    for path in (
        token_file,
        worker_token_file(token_file),
        secret_env_file(token_file),
        drain_token_file(token_file),
    ):
        privilege.remove_file(identity, path)


def _write_new_token(privilege: Privilege, identity: Identity, path: Path) -> str:
    token = secrets.token_urlsafe(32)
    privilege.give_file(identity, path, token)
    return hash_key(token)
