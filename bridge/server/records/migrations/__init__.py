"""Alembic migrations of the call-records database, run by `bridge.server.records.store.migrate`."""

__all__: list[str] = []
