"""The database behind the records: one async SQLAlchemy engine (aiosqlite or asyncpg).

``sqlite:///bridge.db`` (the default) is a file in the working directory, created on first
start; ``postgresql://user:password@host/db`` works the same. The schema is brought up to date
by Alembic at start-up (``migrate``), in place. Writes are whole calls, idempotent (a call's rows
are replaced in one transaction), so the writer can retry a batch without duplicating anything.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command  # imported here, not on first use: a database that only answers mid-call
from alembic.config import Config  # must not stall the event loop for the import (about a second)
from sqlalchemy import Connection, and_, delete, event, insert, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bridge.server.records import schema
from bridge.server.records.model import CallRecord

__all__ = ["Store", "async_url", "decode_cursor", "encode_cursor"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_CHILDREN = (schema.turns, schema.barge_ins, schema.reconnects, schema.segments)
_PG_MIGRATION_LOCK = 0x62726467  # one worker migrates at a time


def async_url(url: str) -> str:
    """The SQLAlchemy URL with its async driver: aiosqlite for SQLite, asyncpg for PostgreSQL."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    for plain, driver in (("sqlite://", "sqlite+aiosqlite://"), ("postgresql://", "postgresql+asyncpg://")):
        if url.startswith(plain):
            return driver + url.removeprefix(plain)
    return url


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time the records hold is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def encode_cursor(started_at: datetime, call_id: str) -> str:
    raw = f"{_utc(started_at).isoformat()}|{call_id}".encode()  # type: ignore[union-attr]
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """The position a page ends at, or None for a cursor that is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, call_id = raw.split("|", 1)
        return _utc(datetime.fromisoformat(when)), call_id  # type: ignore[return-value]
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


class Store:
    """Reads and writes call records; every method may raise the driver's errors (the caller retries)."""

    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        if self.dialect == "sqlite":
            quiet = logging.getLogger("aiosqlite")  # at DEBUG it logs every statement from its own thread
            if quiet.level == logging.NOTSET:
                quiet.setLevel(logging.INFO)
            database = make_url(self.url).database
            if database and database != ":memory:":
                with contextlib.suppress(OSError):  # if it cannot be made, connecting fails: logged, retried
                    Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(self.url, connect_args={"timeout": 5})
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(self.url, pool_pre_ping=True, pool_size=2, max_overflow=2,
                                              connect_args={"timeout": 5, "command_timeout": 10})

    async def migrate(self) -> None:
        """Upgrade the schema to the newest revision (creating it on an empty database)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(self._upgrade)

    def _upgrade(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")

    async def save(self, records: Sequence[CallRecord], audio_paths: dict[str, str], chunk: int = 20) -> None:
        """Replace these calls' rows, all in one transaction, ``chunk`` calls a statement: each
        statement's Python work (building rows, binding them) stays short, and between
        statements the caller's thread waits for the database without the interpreter's lock."""
        async with self.engine.begin() as conn:
            for start in range(0, len(records), chunk):
                part = records[start:start + chunk]
                ids = [r.call_id for r in part]
                for table in (*_CHILDREN, schema.calls):
                    await conn.execute(delete(table).where(table.c.call_id.in_(ids)))
                await conn.execute(insert(schema.calls), [_call_row(r, audio_paths.get(r.call_id)) for r in part])
                for table, rows in _child_rows(part).items():
                    if rows:
                        await conn.execute(insert(table), rows)

    async def list_calls(self, limit: int, cursor: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        """Newest first; ``cursor`` is the last call of the previous page."""
        query = select(schema.calls).order_by(schema.calls.c.started_at.desc(), schema.calls.c.call_id.desc())
        if cursor is not None:
            when, call_id = cursor
            c = schema.calls.c
            query = query.where(or_(c.started_at < when, and_(c.started_at == when, c.call_id < call_id)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).mappings().all()
        return [_fix_times(dict(row)) for row in rows]

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        """One call with all its parts, or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(schema.calls).where(schema.calls.c.call_id == call_id))).mappings().first()
            if row is None:
                return None
            call = _fix_times(dict(row))
            for table, key in ((schema.turns, "turn"), (schema.barge_ins, "seq"), (schema.reconnects, "seq"),
                               (schema.segments, "seq")):
                query = select(table).where(table.c.call_id == call_id).order_by(table.c[key])
                call[table.name] = [dict(r) for r in (await conn.execute(query)).mappings().all()]
        return call

    async def purge(self, older_than_days: int, now: datetime | None = None) -> list[str | None]:
        """Delete calls that started before the retention window; returns their recordings' paths."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
        c = schema.calls.c
        async with self.engine.begin() as conn:
            old = (await conn.execute(select(c.call_id, c.audio_path).where(c.started_at < cutoff))).all()
            ids = [row[0] for row in old]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                for table in (*_CHILDREN, schema.calls):
                    await conn.execute(delete(table).where(table.c.call_id.in_(chunk)))
        return [row[1] for row in old]

    async def aclose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the pages read while the writer writes; busy_timeout waits out another process's lock."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _fix_times(row: dict[str, Any]) -> dict[str, Any]:
    row["started_at"], row["ended_at"] = _utc(row["started_at"]), _utc(row["ended_at"])
    return row


def _call_row(r: CallRecord, audio_path: str | None) -> dict[str, Any]:
    return {
        "call_id": r.call_id, "stream_id": r.stream_id, "carrier": r.carrier, "from_number": r.from_number,
        "to_number": r.to_number, "started_at": r.started_at, "ended_at": r.ended_at,
        "duration_s": None if r.duration_s is None else round(r.duration_s, 3), "ended_how": r.ended_how,
        "end_detail": r.end_detail, "turns": len(r.turns), "barge_ins": len(r.barge_ins),
        "tts_reconnects": len(r.reconnects), "median_reply_ms": r.median_reply_ms, "audio_path": audio_path,
    }


def _child_rows(records: Sequence[CallRecord]) -> dict[Any, list[dict[str, Any]]]:
    rows: dict[Any, list[dict[str, Any]]] = {table: [] for table in _CHILDREN}
    for r in records:
        for table, items in ((schema.turns, r.turns), (schema.barge_ins, r.barge_ins),
                             (schema.reconnects, r.reconnects), (schema.segments, r.segments)):
            names = [col.name for col in table.columns if col.name != "call_id"]
            rows[table].extend({"call_id": r.call_id, **{n: getattr(item, n) for n in names}} for item in items)
    return rows
