"""Writes call records in the background, so the database can never slow a call down.

Calls hand their records to `RecordWriter.submit`, which only files them in memory (the newest
version of each call replaces the older one) and returns. One task writes what is waiting in
batches, one transaction per batch, waiting ``linger_s`` after the first record so that the
records of many calls share a transaction (its cost hardly depends on how many it holds).
When the database is down, slow or locked, the batch stays where it is and is tried again with
growing pauses (up to ``max_retry_s``), for as long as it takes: no call is lost while the
server runs and memory holds. Only beyond ``max_pending`` calls waiting, or at shutdown after a
last try, is a record given up: logged and counted in ``bridge_records_lost``. The same task
deletes records past their retention, now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bridge.server.records.metrics import RECORD_WRITE_FAILURES, RECORDS_LOST, RECORDS_PENDING, RECORDS_WRITTEN
from bridge.server.records.model import CallRecord
from bridge.server.records.store import Store
from bridge.server.records.wav import write_stereo_wav

__all__ = ["RecordWriter"]

log = logging.getLogger("bridge.server.records")


class RecordWriter:
    """Owns the pending records and the one task that writes them."""

    def __init__(self, store: Store, *, retention_days: int, recordings_dir: Path, batch: int = 200,
                 linger_s: float = 0.5, max_pending: int = 20_000, max_retry_s: float = 10.0,
                 purge_every_s: float = 3600.0) -> None:
        self.store = store
        self.retention_days = retention_days
        self.recordings_dir = recordings_dir
        self.batch = batch
        self.linger_s = linger_s
        self.max_pending = max_pending
        self.max_retry_s = max_retry_s
        self.purge_every_s = purge_every_s
        self.ready = False  # the schema is up to date
        self.written = 0
        self.lost = 0
        self._pending: dict[str, CallRecord] = {}
        self._audio_paths: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failing_since: float | None = None

    # ----------------------------------------------------------------- the calls' side

    def submit(self, record: CallRecord) -> None:
        """File the newest version of a call's record; never blocks, never raises."""
        pending = self._pending
        pending.pop(record.call_id, None)
        pending[record.call_id] = record
        if len(pending) > self.max_pending:
            oldest = next(iter(pending))
            del pending[oldest]
            self._give_up([oldest], f"more than {self.max_pending} calls waiting for the database")
        RECORDS_PENDING.set(len(pending))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ----------------------------------------------------------------- life

    async def start(self, wait_s: float = 5.0) -> None:
        """Migrate (waiting up to ``wait_s``, so a healthy database is ready before the first
        request), then write in the background; a database that is not there yet is retried."""
        self._task = asyncio.create_task(self._run(), name="records-writer")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                while not self.ready and not self._task.done():
                    await asyncio.sleep(0.02)

    async def stop(self, flush_s: float = 5.0) -> None:
        """Write what is waiting (for up to ``flush_s``), then give up the rest, loudly."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(flush_s):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except Exception:
                log.exception("call records: the writer failed")
        if self._pending:
            self._give_up(list(self._pending), "the server stopped while the database was unreachable")
            self._pending.clear()
        RECORDS_PENDING.set(0)
        await self.store.aclose()

    # ----------------------------------------------------------------- the task

    async def _run(self) -> None:
        await self._retrying(self.store.migrate, "create or upgrade the schema")
        self.ready = True
        next_purge = 0.0
        while True:
            if time.monotonic() >= next_purge:
                await self._purge()
                next_purge = time.monotonic() + self.purge_every_s
            if self._pending:
                if not self._closing:  # let other calls' records join the batch: a transaction costs
                    await asyncio.sleep(self.linger_s)  # the same CPU for 1 record or 10 (benchmarks.md)
                await self._retrying(self._write_batch, "write call records")
                continue
            if self._closing:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_purge - time.monotonic())):
                    await self._wake.wait()

    async def _retrying(self, attempt: Callable[[], Awaitable[None]], what: str) -> None:
        pause = 0.1
        while True:
            try:
                async with asyncio.timeout(30):
                    await attempt()
            except Exception as exc:
                RECORD_WRITE_FAILURES.inc()
                self._note_failure(what, exc)
                if self._closing:  # one more try at most on the way out
                    pause = min(pause, 0.5)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.max_retry_s)
                continue
            if self._failing_since is not None:
                log.warning("call records: the database is back after %.1f s; %d call(s) waiting",
                            time.monotonic() - self._failing_since, len(self._pending))
                self._failing_since = None
            return

    def _note_failure(self, what: str, exc: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            # The driver's message can hold the database URL's host, never its password; keep it short.
            log.warning("call records: cannot %s (%s); calls go on, records wait in memory and are retried",
                        what, type(exc).__name__)

    async def _write_batch(self) -> None:
        batch = list(self._pending.values())[: self.batch]
        for record in batch:
            if record.audio is not None and record.call_id not in self._audio_paths:
                self._audio_paths[record.call_id] = await self._save_audio(record)
        await self.store.save(batch, self._audio_paths)
        for record in batch:
            if self._pending.get(record.call_id) is record:  # not replaced by a newer version meanwhile
                del self._pending[record.call_id]
                if record.ended_at is not None:
                    self._audio_paths.pop(record.call_id, None)
        self.written += len(batch)
        RECORDS_WRITTEN.inc(len(batch))
        RECORDS_PENDING.set(len(self._pending))

    async def _save_audio(self, record: CallRecord) -> str:
        assert record.audio is not None
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in record.call_id)
        path = self.recordings_dir / f"{record.started_at:%Y-%m-%d}" / f"{safe}.wav"
        try:
            await asyncio.to_thread(write_stereo_wav, path, record.audio)
        except OSError as exc:
            log.error("call records: cannot write the recording of call %s: %s", record.call_id, exc)
            return ""
        return str(path)

    async def _purge(self) -> None:
        try:
            async with asyncio.timeout(60):
                paths = await self.store.purge(self.retention_days)
        except Exception as exc:
            log.warning("call records: retention purge failed (%s); tried again later", type(exc).__name__)
            return
        for path in paths:
            if path:
                with contextlib.suppress(OSError):
                    Path(path).unlink()
        if paths:
            log.info("call records: deleted %d call(s) older than %d days", len(paths), self.retention_days)

    def _give_up(self, call_ids: list[str], why: str) -> None:
        self.lost += len(call_ids)
        RECORDS_LOST.inc(len(call_ids))
        log.error("call records: gave up the record of %d call(s) (%s): %s", len(call_ids), why,
                  ", ".join(call_ids[:20]) + (" ..." if len(call_ids) > 20 else ""))
