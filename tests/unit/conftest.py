"""Fixtures every unit test folder shares."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifactory.store import Store


@pytest.fixture(scope="session")
def _empty_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file with the newest schema, migrated once for the whole run."""
    path = tmp_path_factory.mktemp("schema") / "state.db"
    template = Store(f"sqlite:///{path}")
    template.create_schema()
    template.close()  # the last connection closing folds the WAL into the file
    return path


@pytest.fixture
def store(tmp_path: Path, _empty_database: Path) -> Iterator[Store]:
    """A fresh store on SQLite in the test's own directory, schema created."""
    path = tmp_path / "state.db"
    shutil.copyfile(_empty_database, path)
    fresh = Store(f"sqlite:///{path}")
    yield fresh
    fresh.close()
