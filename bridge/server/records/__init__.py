"""Call records: every call kept in a database, readable through an API and server-rendered pages.

See docs/call-records.md. The parts: `recorder` (watches one call), `writer` (background,
batched, retried writes), `store` (SQLAlchemy async engine and Alembic migrations), `api` and
`pages` (the routes), `access` (the admin token), `service` (what the app holds).
"""

from __future__ import annotations

from bridge.server.records.access import admin_token
from bridge.server.records.service import Records

__all__ = ["Records", "admin_token"]
