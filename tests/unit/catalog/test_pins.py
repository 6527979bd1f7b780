"""Pinned models: readable by the deploying tenant's user, exact bytes, nothing else exposed."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from aifactory.catalog.pins import ModelPins, PinMismatch
from aifactory.identity import Identity, lookup
from unix_users import make_traversable

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="the test users exist where CI runs")

MODEL = b"GGUF version one\n" * 100


def _kept(tmp_path: Path, owner: Identity) -> tuple[Path, str]:
    """A content store's file, as the catalog keeps a bucket's inode: the owner's, 0640."""
    store = tmp_path / "objects" / ".aifactory-catalog"
    store.mkdir(parents=True, mode=0o700)
    kept = store / "model"
    kept.write_bytes(MODEL)
    os.chown(kept, owner.uid, owner.gid)
    kept.chmod(0o640)
    make_traversable(tmp_path / "objects")
    return kept, hashlib.sha256(MODEL).hexdigest()


def _read_as(identity: Identity, path: Path) -> subprocess.CompletedProcess[bytes]:
    command = ["setpriv", f"--reuid={identity.uid}", f"--regid={identity.gid}", "--clear-groups"]
    return subprocess.run([*command, "cat", str(path)], capture_output=True, check=False)


@needs_root
def test_the_owners_pin_is_a_link_its_user_reads_and_outlives_the_bucket_file(
    tmp_path: Path,
) -> None:
    alice = lookup("aif-alice")
    kept, sha256 = _kept(tmp_path, alice)
    pins = ModelPins(tmp_path / "objects" / ".aifactory-pins")
    pinned = pins.pin(kept, sha256, len(MODEL), 7, alice)
    assert pinned.stat().st_ino == kept.stat().st_ino, "no copy of the tenant's own file"
    assert pins.pin(kept, sha256, len(MODEL), 7, alice) == pinned
    assert _read_as(alice, pinned).stdout == MODEL
    assert _read_as(alice, kept).returncode != 0, "the content store stays the control plane's"
    bob = lookup("aif-bob")
    assert _read_as(bob, pinned).returncode != 0, "another tenant's user reads no pin of alice's"
    assert pins.links() == {sha256: 1}
    assert pins.copied_bytes(7) == 0


@needs_root
def test_another_tenants_model_is_copied_to_the_deployer_and_checked(tmp_path: Path) -> None:
    alice, bob = lookup("aif-alice"), lookup("aif-bob")
    kept, sha256 = _kept(tmp_path, alice)
    pins = ModelPins(tmp_path / "objects" / ".aifactory-pins")
    pinned = pins.pin(kept, sha256, len(MODEL), 8, bob)
    found = pinned.stat()
    assert found.st_ino != kept.stat().st_ino
    assert (found.st_uid, found.st_mode & 0o777) == (bob.uid, 0o440)
    assert _read_as(bob, pinned).stdout == MODEL
    assert pins.copied_bytes(8) == len(MODEL)

    kept.write_bytes(b"GGUF version two\n" * 100)  # the same length, other bytes
    pinned.unlink()
    with pytest.raises(PinMismatch):
        pins.pin(kept, sha256, len(MODEL), 8, bob)
    assert not any(pins.folder(8).iterdir()), "a failed copy leaves nothing behind"


@needs_root
def test_pins_no_service_names_go_once_past_their_grace(tmp_path: Path) -> None:
    alice = lookup("aif-alice")
    kept, sha256 = _kept(tmp_path, alice)
    other = kept.with_name("other")
    other.write_bytes(b"another model")
    pins = ModelPins(tmp_path / "objects" / ".aifactory-pins")
    used = pins.pin(kept, sha256, len(MODEL), 7, alice)
    unused = pins.pin(other, "ab" * 32, len(b"another model"), 7, alice)
    assert pins.prune(7, {str(used)}) == 0, "a fresh pin may belong to a deploy not yet stored"
    assert pins.prune(7, {str(used)}, older_than_s=0) == 1
    assert used.exists() and not unused.exists() and other.exists()
