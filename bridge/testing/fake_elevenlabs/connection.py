"""WebSocket I/O of the fake: one runner per connection, one worker task per context, and the records.

The runner only pumps: it feeds each message to the connection's :class:`MultiContextSession`,
voices whatever became pending, paced like the real service, and ends the socket the way the
session (or a fault) decided. What it saw and sent is kept in a :class:`ConnectionRecord` for the
test's assertions, after the socket has closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from bridge.testing.fake_elevenlabs.audio import chunk_alignment, encode_samples, plan_chunks, render_tone, sample_width
from bridge.testing.fake_elevenlabs.context import FakeContext, Segment
from bridge.testing.fake_elevenlabs.protocol import Failure, MultiContextSession, error_frame

__all__ = ["ConnectionRecord", "ConnectionRunner", "Pacing", "SentFrame", "decode"]


class Pacing(Protocol):
    """What a connection reads of its server (`FakeElevenLabs`): keys and how audio is paced."""

    @property
    def keys(self) -> tuple[str, str]: ...

    ttfb: float
    realtime_factor: float | None
    ms_per_char: float
    chunk_ms: tuple[float, float]
    split_samples: bool
    generation_gate: asyncio.Event

log = logging.getLogger("bridge.testing.fake_elevenlabs")


@dataclass
class SentFrame:
    """One frame the server sent, minus the audio bytes themselves."""

    at: float
    context_id: str | None
    audio_bytes: int = 0
    is_final: bool = False
    error: str | None = None
    message: dict[str, Any] = field(default_factory=dict)  # the frame with "audio" replaced by its length


@dataclass(eq=False)
class ConnectionRecord:
    """Everything about one accepted WebSocket, kept after it closes."""

    index: int
    voice_id: str
    headers: dict[str, str]
    query: dict[str, str]
    session: MultiContextSession
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    sent: list[SentFrame] = field(default_factory=list)
    closed_code: int | None = None

    @property
    def violations(self) -> list[str]:
        return self.session.violations

    @property
    def max_open(self) -> int:
        return self.session.max_open

    @property
    def timed_out(self) -> list[str]:
        return self.session.timed_out

    @property
    def contexts(self) -> list[FakeContext]:
        return self.session.history

    @property
    def errors(self) -> list[str]:
        return [f.error for f in self.sent if f.error]



class ConnectionRunner:
    """Pumps one socket: a receiver, a timeout watchdog, and a worker per context that voices it.

    Whoever decides the socket must end calls :meth:`request_close`; only :meth:`run` then stops
    the tasks and closes, so the error frame is always the last thing sent before the close.
    """

    def __init__(
        self, fake: Pacing, ws: ServerConnection, record: ConnectionRecord, refusal: Failure | None
    ) -> None:
        self.fake = fake
        self.ws = ws
        self.record = record
        self.session = record.session
        self.params = record.session.params
        self._refusal = refusal
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers: dict[FakeContext, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._drainer: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._close: Failure | None = None
        self.finished = asyncio.Event()

    async def run(self) -> None:
        try:
            if self._refusal is not None:
                self.request_close(self._refusal)
            else:
                self._spawn(self._receive())
                self._spawn(self._watchdog())
            await self._stop.wait()
            await self._cancel_tasks()
            await self._end_socket()
        finally:
            await self._cancel_tasks()
            self.record.closed_code = self._closed_code()
            self.finished.set()

    def _closed_code(self) -> int | None:
        """The code we closed with, or else the peer's (websockets' own ``close_code`` lags)."""
        if self._close is not None:
            return self._close.code
        received = self.ws.protocol.close_rcvd
        return received.code if received is not None else self.ws.close_code

    def request_close(self, failure: Failure | None) -> None:
        """Ask the runner to end the socket; ``None`` means it is already gone. First caller wins."""
        if not self._stop.is_set():
            self._close = failure
            self._stop.set()

    # -- tasks --------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fake ElevenLabs task failed", exc_info=task.exception())
            self.request_close(Failure(error_frame("internal_error", "fake server bug"), code=1011))

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _end_socket(self) -> None:
        failure = self._close
        if failure is None:
            return
        with contextlib.suppress(ConnectionClosed):
            if failure.frame:
                await self._send(failure.frame, SentFrame(0.0, None, error=failure.error))
            self.record.closed_code = failure.code  # before the close, so a test sees it at once
            await self.ws.close(failure.code, failure.reason)

    # -- inbound ------------------------------------------------------------------------------

    async def _receive(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                if self._stop.is_set():
                    return
                now = time.monotonic()
                message = decode(raw)
                self.record.messages.append((now, message if isinstance(message, dict) else {"_raw": raw}))
                failure = self.session.receive(message, now)
                if failure is not None:
                    self.request_close(failure)
                    return
                self._sync_workers()
        self.request_close(None)

    async def _watchdog(self) -> None:
        interval = max(0.005, min(0.25, self.params.inactivity_timeout / 20))
        while True:
            await asyncio.sleep(interval)
            failure = self.session.expire(time.monotonic())
            if failure is not None:
                self.request_close(failure)
                return
            self._sync_workers()

    def _sync_workers(self) -> None:
        """Give every live context a worker and wake them all; start draining after close_socket."""
        for ctx in self.session.active.values():
            entry = self._workers.get(ctx)
            if entry is None:
                wake = asyncio.Event()
                entry = (self._spawn(self._work(ctx, wake)), wake)
                self._workers[ctx] = entry
            entry[1].set()
        if self.session.closing and self._drainer is None:
            self._drainer = self._spawn(self._drain_then_close())

    async def _drain_then_close(self) -> None:
        await asyncio.gather(*(task for task, _ in self._workers.values()), return_exceptions=True)
        self.request_close(Failure({}, code=1000))

    # -- outbound -----------------------------------------------------------------------------

    async def _work(self, ctx: FakeContext, wake: asyncio.Event) -> None:
        """Voice a context's segments in order, then send its isFinal once it is closed and empty."""
        try:
            while True:
                if not ctx.pending:
                    if ctx.closed:
                        break
                    wake.clear()
                    await wake.wait()
                    continue
                segment = ctx.pending[0]
                await self._wait_first_byte(segment)
                if not ctx.pending or ctx.pending[0] is not segment:
                    continue  # dropped by the close race while we waited
                ctx.pending.popleft()
                ctx.streaming_started = True
                await self._stream(ctx, segment)
            await self._send_final(ctx)
        except ConnectionClosed:
            return
        finally:
            self._workers.pop(ctx, None)

    async def _wait_first_byte(self, segment: Segment) -> None:
        delay = segment.triggered_at + self.fake.ttfb - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.fake.generation_gate.wait()

    async def _stream(self, ctx: FakeContext, segment: Segment) -> None:
        audio, bytes_per_ms = self._render(ctx, segment.text)
        granule = 1 if self.fake.split_samples else sample_width(self.params.output_format)
        sizes = plan_chunks(len(audio), bytes_per_ms, ctx.rng, granule=granule, chunk_ms=self.fake.chunk_ms)
        started = time.monotonic()
        offset = 0
        for n, size in enumerate(sizes):
            await self.fake.generation_gate.wait()
            chunk = audio[offset : offset + size]
            span = (offset / bytes_per_ms, (offset + size) / bytes_per_ms)
            await self._send_audio(ctx, segment.text, chunk, span, last=n == len(sizes) - 1)
            offset += size
            await self._pace(started, offset / bytes_per_ms)

    def _render(self, ctx: FakeContext, text: str) -> tuple[bytes, float]:
        """The segment's audio in the wire encoding, and how many bytes make a millisecond."""
        rate, fmt = self.params.sample_rate, self.params.output_format
        count = round(len(text) * self.fake.ms_per_char * rate / 1000)
        samples = render_tone(ctx.frequency, rate, ctx.samples_rendered, count)
        ctx.samples_rendered += count
        return encode_samples(samples, fmt), rate * sample_width(fmt) / 1000

    async def _pace(self, started: float, audio_ms: float) -> None:
        factor = self.fake.realtime_factor
        if factor:
            delay = started + audio_ms / 1000 / factor - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _send_audio(
        self, ctx: FakeContext, text: str, chunk: bytes, span: tuple[float, float], last: bool
    ) -> None:
        id_key, _ = self.fake.keys
        message: dict[str, Any] = {"audio": base64.b64encode(chunk).decode("ascii"), id_key: ctx.context_id}
        if self.params.sync_alignment:
            alignment = chunk_alignment(text, self.fake.ms_per_char, span[0], span[1], last)
            message["alignment"] = alignment
            message["normalizedAlignment"] = alignment
        summary = {**message, "audio": len(chunk)}
        await self._send(message, SentFrame(0.0, ctx.context_id, audio_bytes=len(chunk), message=summary))
        ctx.record_audio(chunk)

    async def _send_final(self, ctx: FakeContext) -> None:
        id_key, final_key = self.fake.keys
        message = {final_key: True, id_key: ctx.context_id}
        await self._send(message, SentFrame(0.0, ctx.context_id, is_final=True, message=message))
        self.session.finish(ctx)

    async def _send(self, message: dict[str, Any], frame: SentFrame) -> None:
        await self.ws.send(json.dumps(message, separators=(",", ":")))
        frame.at = time.monotonic()
        if not frame.message:
            frame.message = message
        self.record.sent.append(frame)


def decode(raw: str | bytes) -> Any:
    """A text frame's JSON, or ``None`` for binary frames and malformed JSON (both are invalid input)."""
    if not isinstance(raw, str):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
