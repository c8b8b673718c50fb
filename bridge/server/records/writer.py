"""Writes call records in a thread of their own, so the database can never slow a call down.

The calls' event loop paces every live call's audio, 20 ms at a time; anything else it runs
makes those timers late. Writing a batch is mostly Python (SQLAlchemy building statements and
binding parameters, the drivers encoding rows): on the calls' loop, even with an async engine,
that work runs between the calls' frames. So the writer has its own thread with its own event
loop, its own engine on the same database, and does everything there: the schema migration,
batching, retries, the retention purge and the WAV files.

Calls hand their records to `RecordWriter.submit`, which appends them to a thread-safe queue,
wakes the writer's loop and returns: O(1) on the calls' loop, never blocking, never raising.
The writer files them (the newest version of each call replaces the older one) and writes what
is waiting in batches, waiting ``linger_s`` after the first record so that the records of many
calls share the cost of a transaction. No statement of a batch carries more than
``statement_rows`` rows, so no single step of the writer holds the interpreter's lock for long:
the calls' loop only has to wait for the step in progress.

When the database is down, slow or locked, the batch stays where it is and is tried again with
growing pauses (up to ``max_retry_s``), for as long as it takes: no call is lost while the
server runs and memory holds. Only beyond ``max_pending`` calls waiting, or at shutdown after a
last try, is a record given up: logged and counted in ``bridge_records_lost`` (the Prometheus
client's metrics are safe to update from any thread). The app reads records through its own
`Store` on its own loop (`store`); reads are rare, and page by page.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import logging
import threading
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
    """Owns the writer's thread, the records waiting for it, and what it gave up."""

    def __init__(self, store: Store, *, retention_days: int, recordings_dir: Path, batch: int = 200,
                 statement_rows: int = 250, linger_s: float = 0.5, max_pending: int = 20_000, max_retry_s: float = 10.0,
                 purge_every_s: float = 3600.0) -> None:
        self.store = store  # the app's, for reading on its loop; the writer opens its own on the same URL
        self.retention_days = retention_days
        self.recordings_dir = recordings_dir
        self.batch = batch
        self.statement_rows = statement_rows
        self.linger_s = linger_s
        self.max_pending = max_pending
        self.max_retry_s = max_retry_s
        self.purge_every_s = purge_every_s
        self.ready = False  # the schema is up to date
        self.written = 0
        self.lost = 0
        self._inbox: collections.deque[CallRecord] = collections.deque()  # appended on any thread
        self._lost_lock = threading.Lock()
        self._closing = False
        self._stopped = False  # no thread will take the inbox any more
        self._thread: threading.Thread | None = None
        self._finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        # The writer's thread's own while it runs (stop() reads them once it has ended):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[str, CallRecord] = {}
        self._audio_paths: dict[str, str] = {}
        self._failing_since: float | None = None

    # ----------------------------------------------------------------- the calls' side

    def submit(self, record: CallRecord) -> None:
        """Hand over the newest version of a call's record; never blocks, never raises."""
        if self._stopped:
            self._give_up([record.call_id], "the records writer has stopped")
            return
        self._inbox.append(record)
        self._nudge()

    @property
    def pending(self) -> int:
        """Calls whose record waits to be written, filed or not yet filed (a call whose newer
        version is still in the inbox counts once). ``list`` copies the inbox in one step, safe
        against the writer's thread taking from it."""
        return len(self._pending.keys() | {record.call_id for record in list(self._inbox)})

    def _nudge(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop has just closed: stop() gives the inbox up
                loop.call_soon_threadsafe(wake.set)

    # ----------------------------------------------------------------- life

    async def start(self, wait_s: float = 5.0) -> None:
        """Start the writer's thread, which migrates; wait up to ``wait_s`` for that, so a healthy
        database is ready before the first request. A database that is not there yet is retried."""
        self._thread = threading.Thread(target=self._serve, name="records-writer", daemon=True)
        self._thread.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                while not self.ready and not self._finished.done():
                    await asyncio.sleep(0.02)

    async def stop(self, flush_s: float = 5.0) -> None:
        """Write what is waiting (for up to ``flush_s``), then give up the rest, loudly."""
        self._closing = True
        self._nudge()
        if self._thread is not None:
            finished = asyncio.wrap_future(self._finished)
            await asyncio.wait({finished}, timeout=flush_s)
            if not finished.done():  # the database still does not answer: stop trying
                loop, task = self._loop, self._task
                if loop is not None and task is not None:
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(task.cancel)
                await asyncio.wait({finished}, timeout=2.0)
        self._stopped = True
        left = list(self._pending) + [r.call_id for r in self._inbox]
        if left:
            self._give_up(list(dict.fromkeys(left)), "the server stopped while the database was unreachable")
        self._pending.clear()
        self._inbox.clear()
        RECORDS_PENDING.set(0)
        await self.store.aclose()

    # ----------------------------------------------------------------- the writer's thread

    def _serve(self) -> None:
        try:
            with asyncio.Runner() as runner:
                runner.run(self._main())
        except BaseException:
            log.exception("call records: the writer failed")
        finally:
            self._loop = None
            self._finished.set_result(None)

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        store = Store(self.store.url)  # an engine of this loop's own: asyncpg's connections belong to one loop
        try:
            await self._run(store)
        except asyncio.CancelledError:
            pass
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await store.aclose()

    async def _run(self, store: Store) -> None:
        assert self._wake is not None
        await self._retrying(store.migrate, "create or upgrade the schema")
        self.ready = True
        next_purge = 0.0
        while True:
            if time.monotonic() >= next_purge:
                await self._purge(store)
                next_purge = time.monotonic() + self.purge_every_s
            self._wake.clear()
            self._take()
            if self._pending:
                # Let other calls' records join the batch: a transaction costs about the same CPU
                # for 1 record as for 10 (benchmarks.md). A stop cuts the wait short.
                await self._pause(self.linger_s, closing_s=0.0)
                await self._retrying(lambda: self._write_batch(store), "write call records")
                continue
            if self._closing:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_purge - time.monotonic())):
                    await self._wake.wait()

    def _take(self) -> None:
        """File what the calls handed over; only the newest version of each call waits."""
        pending, inbox = self._pending, self._inbox
        while inbox:
            record = inbox.popleft()
            pending.pop(record.call_id, None)
            pending[record.call_id] = record
            if len(pending) > self.max_pending:
                oldest = next(iter(pending))
                del pending[oldest]
                self._give_up([oldest], f"more than {self.max_pending} calls waiting for the database")
        RECORDS_PENDING.set(len(pending))

    async def _retrying(self, attempt: Callable[[], Awaitable[None]], what: str) -> None:
        pause = 0.1
        while True:
            try:
                async with asyncio.timeout(30):
                    await attempt()
            except Exception as exc:
                RECORD_WRITE_FAILURES.inc()
                self._note_failure(what, exc)
                await self._pause(pause, closing_s=0.5)  # one more try at most on the way out
                pause = min(pause * 2, self.max_retry_s)
                continue
            if self._failing_since is not None:
                log.warning("call records: the database is back after %.1f s; %d call(s) waiting",
                            time.monotonic() - self._failing_since, len(self._pending))
                self._failing_since = None
            return

    async def _pause(self, seconds: float, closing_s: float) -> None:
        """Wait, filing what the calls hand over meanwhile (so that it counts against
        ``max_pending`` and in ``pending``); once the server stops, wait ``closing_s`` at most."""
        assert self._wake is not None
        end = time.monotonic() + seconds
        while True:
            self._wake.clear()
            self._take()
            now = time.monotonic()
            if self._closing:
                end = min(end, now + closing_s)
            if now >= end:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(end - now):
                    await self._wake.wait()

    def _note_failure(self, what: str, exc: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            # The driver's message can hold the database URL's host, never its password; keep it short.
            log.warning("call records: cannot %s (%s); calls go on, records wait in memory and are retried",
                        what, type(exc).__name__)

    async def _write_batch(self, store: Store) -> None:
        batch = list(itertools.islice(self._pending.values(), self.batch))
        for record in batch:
            if record.audio is not None and record.call_id not in self._audio_paths:
                self._audio_paths[record.call_id] = await self._save_audio(record)
        await store.save(batch, self._audio_paths, rows=self.statement_rows)
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

    async def _purge(self, store: Store) -> None:
        try:
            async with asyncio.timeout(60):
                paths = await store.purge(self.retention_days)
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
        with self._lost_lock:
            self.lost += len(call_ids)
        RECORDS_LOST.inc(len(call_ids))
        log.error("call records: gave up the record of %d call(s) (%s): %s", len(call_ids), why,
                  ", ".join(call_ids[:20]) + (" ..." if len(call_ids) > 20 else ""))
