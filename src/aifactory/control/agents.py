"""An agent's own API key: minted at deploy, handed to each replica, revoked at delete.

The key belongs to the agent's tenant (so the agent works under that tenant's
limits and sees what that tenant may see) and is named ``agent NAME``. Its
secret, and where object storage runs the key's S3 credentials and endpoint,
are kept in ``DATA_DIR/agents/NAME.env`` (mode 0600) as the environment
lines each replica gets through the launcher's ``--secret-env``::

    OPENAI_API_KEY=aif-…
    AWS_ENDPOINT_URL=http://HOST:9000  AWS_ACCESS_KEY_ID=…  AWS_SECRET_ACCESS_KEY=…
"""

from __future__ import annotations

import os
from pathlib import Path

from aifactory.config import Settings
from aifactory.store import Store
from aifactory.tenancy import issue_key, load_s3_master

__all__ = ["AgentKeys"]


class AgentKeys:
    """Mints, reads and revokes agents' keys (blocking: call from threads)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._dir = settings.data_dir / "agents"
        self._store = store

    def _file(self, agent: str) -> Path:
        return self._dir / f"{agent}.env"

    def provision(self, agent: str, tenant_id: int | None) -> None:
        """Mint the agent's key (a member's) in its tenant (the ``admin`` tenant when none)."""
        tenant = next((t.name for t in self._store.tenants() if t.id == tenant_id), "admin")
        settings = self._settings
        with_s3 = settings.objects_port != 0
        master = load_s3_master(settings.objects_master_key_file) if with_s3 else None
        issued = issue_key(self._store, tenant, "member", f"agent {agent}", s3_master=master)
        lines = [f"OPENAI_API_KEY={issued.secret}"]
        if with_s3:
            lines += [
                f"AWS_ENDPOINT_URL={settings.objects_url}",
                f"AWS_ACCESS_KEY_ID={issued.s3_access_key_id}",
                f"AWS_SECRET_ACCESS_KEY={issued.s3_secret_access_key}",
                "AWS_DEFAULT_REGION=us-east-1",
            ]
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._file(agent), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")

    def secret_env(self, agent: str) -> str:
        """The environment lines a replica of ``agent`` gets (empty if never provisioned)."""
        try:
            return self._file(agent).read_text()
        except FileNotFoundError:
            return ""

    def revoke(self, agent: str) -> None:
        """Revoke the agent's key and forget its secret."""
        for key in self._store.list_keys():
            if key["name"] == f"agent {agent}" and not key["revoked"]:
                self._store.revoke_key(key["id"])
        self._file(agent).unlink(missing_ok=True)
