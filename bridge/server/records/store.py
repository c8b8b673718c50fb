"""The database behind the records: an async SQLAlchemy engine (aiosqlite or asyncpg) per `Store`.

The app reads through one on its event loop; the records writer writes through one of its own,
made and used in its thread only (an async driver's connections belong to one event loop).

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
import operator
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command  # imported here, not on first use: a database that only answers mid-call
from alembic.config import Config  # must not stall the event loop for the import (about a second)
from sqlalchemy import Connection, Table, and_, delete, event, insert, or_, select
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
        self._inserts: dict[Table, str] = {}
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

    def _upgrade(self, conn: Connection, revision: str = "head") -> None:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)

    async def save(self, records: Sequence[CallRecord], audio_paths: dict[str, str], rows: int = 250) -> None:
        """Replace these calls' rows, all in one transaction. No statement carries more than
        ``rows`` rows (or call ids), so each step of Python work (binding, encoding) stays short,
        and between statements the calling thread waits for the database without the interpreter's
        lock: the records writer's thread leaves the calls' loop the lock often."""
        ids = [r.call_id for r in records]
        calls = [_call_row(r, audio_paths.get(r.call_id)) for r in records]
        async with self.engine.begin() as conn:
            for table in (*_CHILDREN, schema.calls):
                for part in _slices(ids, rows):
                    await conn.execute(delete(table).where(table.c.call_id.in_(part)))
            for part in _slices(calls, rows):
                await conn.execute(insert(schema.calls), part)
            for table, values in _child_rows(records).items():  # most of a call's rows: straight to the
                for part in _slices(values, rows):  # driver, as tuples, without SQLAlchemy's per-row binding
                    await conn.exec_driver_sql(self._insert_sql(table), part)

    def _insert_sql(self, table: Table) -> str:
        """The table's INSERT in the dialect's own words, its values in the columns' order."""
        sql = self._inserts.get(table)
        if sql is None:
            compiled = insert(table).compile(dialect=self.engine.dialect)
            assert tuple(compiled.positiontup or ()) == _KEYS[table], "a positional paramstyle, in column order"
            sql = self._inserts[table] = str(compiled)
        return sql

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
            for part in _slices(ids, 500):
                for table in (*_CHILDREN, schema.calls):
                    await conn.execute(delete(table).where(table.c.call_id.in_(part)))
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
        "aec_refused": r.aec_refused,
    }


def _slices(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


_PARTS = ((schema.turns, "turns"), (schema.barge_ins, "barge_ins"), (schema.reconnects, "reconnects"),
          (schema.segments, "segments"))
_KEYS = {table: tuple(col.name for col in table.columns) for table, _ in _PARTS}  # call_id first
_VALUES = {table: operator.attrgetter(*keys[1:]) for table, keys in _KEYS.items()}


def _child_rows(records: Sequence[CallRecord]) -> dict[Table, list[tuple[Any, ...]]]:
    """Each part of each call as its table's rows, values in the columns' order (the model's
    fields bear the columns' names)."""
    return {table: [(r.call_id, *_VALUES[table](item)) for r in records for item in getattr(r, part)]
            for table, part in _PARTS}
