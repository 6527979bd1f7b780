"""A compiled module older than its source is found, so the server refuses the old build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aifactory import compiled
from aifactory.errors import ConfigError


def test_a_source_edited_after_its_build_is_stale(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "gateway").mkdir(parents=True)
    for name in ("app", "usage"):
        (package / "gateway" / f"{name}.py").write_text("x = 1\n")
        built = package / "gateway" / f"{name}.cpython-311-x86_64-linux-gnu.so"
        built.write_bytes(b"")
        os.utime(built, (2_000_000_000, 2_000_000_000))
    (package / "loose.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")  # no source: not ours
    assert compiled.stale_builds(package) == []
    os.utime(package / "gateway" / "app.py", (2_000_000_100, 2_000_000_100))
    assert compiled.stale_builds(package) == ["gateway/app.py"]


def test_the_server_names_the_stale_source_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "stale_builds", lambda: ["gateway/app.py"])
    with pytest.raises(ConfigError, match=r"gateway/app\.py changed after it was compiled") as fail:
        compiled.check_builds()
    assert "scripts/setup.sh" in fail.value.fix


def test_this_checkouts_builds_are_fresh() -> None:
    assert compiled.stale_builds() == [], "run scripts/setup.sh: a compiled module is older"
