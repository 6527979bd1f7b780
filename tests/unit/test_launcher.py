"""The launcher's one-time files: read, then deleted where the volume allows."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from aifactory.launcher import consume


def test_a_token_is_read_and_deleted(tmp_path: Path) -> None:
    token = tmp_path / "r.token"
    token.write_text("s3cret\n")
    assert consume(token) == "s3cret\n"
    assert not token.exists()


def test_a_token_on_a_read_only_volume_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "r.token"
    token.write_text("s3cret")

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    # A Kubernetes Secret volume refuses the unlink with EROFS.
    monkeypatch.setattr(Path, "unlink", read_only)
    assert consume(token) == "s3cret"


def test_other_errors_are_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "r.token"
    token.write_text("s3cret")

    def denied(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", denied)
    with pytest.raises(PermissionError):
        consume(token)
