"""Alembic's entry point, used only programmatically: the caller passes an open connection in
``config.attributes["connection"]`` (Alembic's "sharing a connection" recipe), so the migration
runs inside the server's own async engine, on whichever database it points at."""

from __future__ import annotations

from alembic import context

__all__: list[str] = []

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
