"""Alembic migrations of the state store (see ``aifactory.store.migrate``)."""
