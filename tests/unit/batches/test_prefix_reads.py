"""An unprivileged control plane reads a shard's output as its tenant, through the prefix.

The control plane cannot open the tenant's 0700 folder; the tenant's identity
reads its own file for it (``aifactory.identity.handoff read``), and a link
it planted there is refused as the control plane's own reads refuse it.
Here root plays the unprivileged control plane with ``runuser`` as the prefix.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path, PurePath

import pytest

from aifactory.batches.own_files import NotOwnFile, OwnFolder
from aifactory.identity import Privilege, lookup
from aifactory.identity.handoff import NOT_A_FILE, main

as_root = pytest.mark.skipif(os.getuid() != 0, reason="runuser needs root (CI runs as root)")


def test_the_read_helper_prints_the_size_then_the_bytes_and_refuses_links(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    (tmp_path / "out.jsonl").write_bytes(b"one\ntwo\n")
    assert main(["read", str(tmp_path / "out.jsonl"), "4"]) == 0
    assert capsysbinary.readouterr().out == b"8\ntwo\n"
    assert main(["read", str(tmp_path / "none.jsonl"), "0"]) == 0
    assert capsysbinary.readouterr().out == b""
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "out.jsonl")
    assert main(["read", str(tmp_path / "link.jsonl"), "0"]) == NOT_A_FILE
    assert capsysbinary.readouterr().out == b""


@as_root
def test_a_tenants_own_folder_is_read_by_the_tenant_through_the_prefix(tmp_path: Path) -> None:
    alice = lookup("aif-alice")
    privilege = Privilege("prefix", tmp_path, ("runuser", "-u", "{user}", "--"))
    assert privilege.through_prefix(alice)
    top = tmp_path / "alice"
    (top / "batches").mkdir(parents=True)
    os.chmod(tmp_path, 0o711)
    for folder in (top, top / "batches"):
        os.chown(folder, alice.uid, alice.gid)
        os.chmod(folder, 0o700)
    output = top / "batches" / "shard-0.jsonl"
    output.write_bytes(b'{"custom_id": "q0"}\n')
    os.chown(output, alice.uid, alice.gid)
    (top / "secret").write_bytes(b"root's")
    (top / "batches" / "shard-1.jsonl").symlink_to(top / "secret")

    folder = OwnFolder(top, alice.uid, partial(privilege.read_file, alice))
    assert folder.read(PurePath("batches/shard-0.jsonl")) == (20, b'{"custom_id": "q0"}\n')
    assert folder.read(PurePath("batches/shard-0.jsonl"), 19) == (20, b"\n")
    assert folder.read(PurePath("batches/shard-9.jsonl")) == (0, b"")
    with pytest.raises(NotOwnFile):
        folder.read(PurePath("batches/shard-1.jsonl"))
