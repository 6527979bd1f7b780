"""Named functions and their calls."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from aifactory.store.queries import Queries
from aifactory.store.tables import FunctionCallRow, FunctionRow


class FunctionQueries(Queries):
    """Named functions and calls."""

    def add_function(self, **fields: Any) -> None:
        """Insert a named function."""
        with self._session() as s:
            s.add(FunctionRow(**fields))

    def function(self, name: str) -> FunctionRow | None:
        """One named function by name."""
        with self._session() as s:
            return s.get(FunctionRow, name)

    def functions(self) -> list[FunctionRow]:
        """Every named function, by name."""
        with self._session() as s:
            return list(s.scalars(select(FunctionRow).order_by(FunctionRow.name)))

    def update_function(self, name: str, **fields: Any) -> None:
        """Change a named function's fields (its sharing)."""
        with self._session() as s:
            s.execute(update(FunctionRow).where(FunctionRow.name == name).values(**fields))

    def remove_function(self, name: str) -> bool:
        """Delete a named function; False if there was none."""
        with self._session() as s:
            result = s.execute(delete(FunctionRow).where(FunctionRow.name == name))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def add_call(self, **fields: Any) -> None:
        """Insert a function call."""
        with self._session() as s:
            s.add(FunctionCallRow(**fields))

    def update_call(self, call_id: str, **fields: Any) -> None:
        """Record a call's outcome."""
        with self._session() as s:
            s.execute(update(FunctionCallRow).where(FunctionCallRow.id == call_id).values(**fields))

    def call(self, call_id: str) -> FunctionCallRow | None:
        """One function call by id."""
        with self._session() as s:
            return s.get(FunctionCallRow, call_id)

    def calls(
        self, function: str = "", limit: int = 50, tenant_id: int | None = None
    ) -> list[FunctionCallRow]:
        """The newest calls, newest first, optionally of one function or tenant."""
        query = select(FunctionCallRow).order_by(FunctionCallRow.submitted_at.desc()).limit(limit)
        if function:
            query = query.where(FunctionCallRow.function == function)
        if tenant_id is not None:
            query = query.where(FunctionCallRow.tenant_id == tenant_id)
        with self._session() as s:
            return list(s.scalars(query))
