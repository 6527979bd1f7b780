from __future__ import annotations

from pathlib import Path

from aifactory.control.lending import drain_token_file
from aifactory.control.planner import secret_env_file, worker_token_file
from aifactory.control.replica_secrets import discard_replica_secrets, write_replica_secrets
from aifactory.tenancy import hash_key


def test_every_replica_gets_an_owner_only_launcher_token_and_only_its_hash_is_kept(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "run" / "chat-abc123.token"
    hashes = write_replica_secrets(token_file, agent_env=None, lent=False, pool_worker=False)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert hashes.token == hash_key(token_file.read_text())
    assert hashes.token != token_file.read_text()
    assert (hashes.drain_token, hashes.worker_token) == ("", "")
    assert not secret_env_file(token_file).exists()
    assert not drain_token_file(token_file).exists()
    assert not worker_token_file(token_file).exists()


def test_agents_lent_replicas_and_pool_workers_get_their_own_secrets(tmp_path: Path) -> None:
    token_file = tmp_path / "run" / "bot-abc123.token"
    hashes = write_replica_secrets(
        token_file, agent_env="OPENAI_API_KEY=sk-x\n", lent=True, pool_worker=True
    )
    assert secret_env_file(token_file).read_text() == "OPENAI_API_KEY=sk-x\n"
    assert hashes.drain_token == hash_key(drain_token_file(token_file).read_text())
    assert hashes.worker_token == hash_key(worker_token_file(token_file).read_text())
    assert len({hashes.token, hashes.drain_token, hashes.worker_token}) == 3
    for path in (token_file, secret_env_file(token_file), drain_token_file(token_file)):
        assert path.stat().st_mode & 0o777 == 0o600

    discard_replica_secrets(token_file)
    assert list((tmp_path / "run").iterdir()) == []
    discard_replica_secrets(token_file)  # twice is harmless
