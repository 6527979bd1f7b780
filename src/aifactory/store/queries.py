"""What every query module of the store shares: the session and the engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker


class Queries:
    """The base of the store's query modules: one transaction per call."""

    engine: Engine
    _sessions: sessionmaker[Session]

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session
