"""The writer keeps calls whole through a database that goes away, and says what it gave up."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from bridge.server.records.store import Store
from bridge.server.records.writer import RecordWriter
from tests.records.conftest import Postgres, create_database, wait_until
from tests.records.factory import record


def lost_total() -> float:
    return REGISTRY.get_sample_value("bridge_records_lost_total") or 0.0


async def test_records_handed_over_on_any_thread_are_written_by_the_writer_s_own_and_a_stop_flushes_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    writers: set[str] = set()
    save = Store.save

    async def watched(self: Store, *args: object, **kwargs: object) -> None:
        writers.add(threading.current_thread().name)
        await save(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "save", watched)
    writer = RecordWriter(Store(url), retention_days=30, recordings_dir=tmp_path, linger_s=60)
    await writer.start()
    assert writer.ready
    callers = [threading.Thread(target=lambda k=k: [writer.submit(record(25 * k + n)) for n in range(25)])
               for k in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    await writer.stop(flush_s=10)  # long before the minute the writer would wait for more calls
    assert writer.lost == 0 and writer.written == 100
    assert writers == {"records-writer"}, "the calls' loop never writes"
    store = Store(url)
    try:
        assert len(await store.list_calls(200, None)) == 100
    finally:
        await store.aclose()


async def test_postgres_stopped_mid_stream_loses_no_call(postgres: Postgres, tmp_path: Path) -> None:
    url = await create_database(postgres)
    writer = RecordWriter(Store(url), retention_days=30, recordings_dir=tmp_path, max_retry_s=0.5)
    await writer.start()
    assert writer.ready
    try:
        for n in range(20):
            writer.submit(record(n))
        await wait_until(lambda: writer.pending == 0)
        postgres.stop()
        try:
            for n in range(20, 60):
                writer.submit(record(n, ended=False))
                writer.submit(record(n))  # the newer version of the same call replaces the older
            await wait_until(lambda: writer.pending == 40, timeout=2)
        finally:
            postgres.start()
        await wait_until(lambda: writer.pending == 0, timeout=30)
        calls = await writer.store.list_calls(200, None)
        assert len(calls) == 60 and all(c["ended_how"] == "caller hung up" for c in calls)
        assert writer.lost == 0
    finally:
        await writer.stop()


async def test_a_database_that_never_answers_costs_the_submitter_nothing_and_losses_are_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database's folder should be")
    writer = RecordWriter(Store(f"sqlite:///{blocker}/records.db"), retention_days=30, recordings_dir=tmp_path,
                          max_pending=5, max_retry_s=0.2)
    before = lost_total()
    with caplog.at_level(logging.WARNING, logger="bridge.server.records"):
        await writer.start(wait_s=0.3)
        assert not writer.ready
        for n in range(8):
            writer.submit(record(n))  # returns at once: nothing waits on the database
        await wait_until(lambda: writer.pending == 5 and writer.lost == 3)  # the writer files them in its thread
        await writer.stop(flush_s=0.3)
    assert writer.lost == 8 and lost_total() - before == 8
    overflow = [r for r in caplog.records if "more than 5 calls waiting" in r.getMessage()]
    assert len(overflow) == 3 and all(r.levelno == logging.ERROR for r in overflow)
    assert "gave up the record of 5 call(s) (the server stopped" in caplog.text


async def test_records_past_retention_are_purged_by_the_running_server(database_url: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    store = Store(database_url)
    await store.migrate()
    old = record(1, started=datetime.now(UTC) - timedelta(days=8))
    await store.save([old, record(2, started=datetime.now(UTC))], {})
    writer = RecordWriter(store, retention_days=7, recordings_dir=tmp_path)
    await writer.start()
    try:
        await wait_until(lambda: writer.ready)
        import asyncio

        for _ in range(100):
            if await store.get_call(old.call_id) is None:
                break
            await asyncio.sleep(0.05)
        assert await store.get_call(old.call_id) is None
        assert len(await store.list_calls(10, None)) == 1
    finally:
        await writer.stop()
