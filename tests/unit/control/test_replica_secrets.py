from __future__ import annotations

import os
from pathlib import Path

import pytest

from aifactory.backends import AllocationRequest
from aifactory.control.lending import drain_token_file
from aifactory.control.planner import secret_env_file, worker_token_file
from aifactory.control.replica_secrets import discard_replica_secrets, prepare_replica
from aifactory.identity import Identity, Privilege, current_identity, lookup
from aifactory.specs import Resources
from aifactory.tenancy import hash_key


def _request(privilege: Privilege, identity: Identity | None, replica: str) -> AllocationRequest:
    own = privilege.workload_dir(identity or current_identity())
    return AllocationRequest(
        replica_id=replica,
        service="chat",
        argv=("true",),
        resources=Resources(),
        time_limit_s=None,
        log_path=own / "logs" / "chat" / f"{replica}.log",
        secret_files=(own / "secrets" / f"{replica}.token",),
        identity=identity,
    )


@pytest.mark.skipif(os.getuid() != 0, reason="hands files to another user: needs root")
def test_a_replicas_secrets_belong_to_its_identity_alone_and_only_their_hash_is_kept(
    tmp_path: Path,
) -> None:
    alice = lookup("aif-alice")
    privilege = Privilege("root", tmp_path)
    request = _request(privilege, alice, "chat-abc123")
    token_file = request.secret_files[0]
    hashes = prepare_replica(privilege, request, agent_env=None, lent=False, pool_worker=False)
    own = privilege.workload_dir(alice)
    for folder in (own, own / "secrets", own / "logs" / "chat"):
        assert (folder.stat().st_uid, folder.stat().st_gid) == (alice.uid, alice.gid)
        assert folder.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "identities").stat().st_mode & 0o777 == 0o711
    assert (token_file.stat().st_uid, token_file.stat().st_mode & 0o777) == (alice.uid, 0o600)
    assert hashes.token == hash_key(token_file.read_text())
    assert hashes.token != token_file.read_text()
    assert (hashes.drain_token, hashes.worker_token) == ("", "")
    assert not secret_env_file(token_file).exists()
    assert not drain_token_file(token_file).exists()
    assert not worker_token_file(token_file).exists()


def test_agents_lent_replicas_and_pool_workers_get_their_own_secrets(tmp_path: Path) -> None:
    privilege = Privilege("single-user", tmp_path)
    request = _request(privilege, None, "bot-abc123")
    token_file = request.secret_files[0]
    hashes = prepare_replica(
        privilege, request, agent_env="OPENAI_API_KEY=sk-x\n", lent=True, pool_worker=True
    )
    assert secret_env_file(token_file).read_text() == "OPENAI_API_KEY=sk-x\n"
    assert hashes.drain_token == hash_key(drain_token_file(token_file).read_text())
    assert hashes.worker_token == hash_key(worker_token_file(token_file).read_text())
    assert len({hashes.token, hashes.drain_token, hashes.worker_token}) == 3
    for path in (token_file, secret_env_file(token_file), drain_token_file(token_file)):
        assert path.stat().st_mode & 0o777 == 0o600

    discard_replica_secrets(privilege, request)
    assert list(token_file.parent.iterdir()) == []
    discard_replica_secrets(privilege, request)  # twice is harmless
