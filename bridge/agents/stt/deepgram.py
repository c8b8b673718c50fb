"""Deepgram live transcription: the caller's audio up a WebSocket, transcripts back as they form.

Unlike a batch endpoint, results arrive while the caller is still talking: interim transcripts
within a few hundred ms, a final one per stretch of speech, ``speech_final`` when Deepgram's
endpointing hears the pause, and ``UtteranceEnd`` after a longer gap. The wire format lives in
`bridge.agents.stt.deepgram_codec` (with the documentation it follows); this module is the shell:
one socket per stream, a reader task, and a keep-alive task so a caller who says nothing for ten
seconds does not get the socket closed under them (``NET-0001``).

The key travels only in the ``Authorization`` header: never in the URL, a log line or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from bridge.agents.stt.base import SttClosed, SttError, SttEvent, Transcript
from bridge.agents.stt.deepgram_codec import (
    CLOSE_STREAM,
    DEFAULT_BASE_URL,
    FINALIZE,
    KEEP_ALIVE,
    DeepgramMetadata,
    DeepgramOptions,
    Encoding,
    Malformed,
    ServerError,
    decode,
    listen_url,
)
from bridge.agents.stt.feed import EventFeed
from bridge.core.audio import pcm_to_ulaw

__all__ = ["DeepgramStream", "DeepgramTranscriber"]

log = logging.getLogger("bridge.agents.stt.deepgram")
# The socket's own logger, pinned above DEBUG: websockets logs every handshake header at DEBUG,
# and one of them is the key.
socket_log = logging.getLogger("bridge.agents.stt.deepgram.socket")
socket_log.setLevel(logging.INFO)


class DeepgramTranscriber:
    """Settings for every stream: key, base URL (a local server in tests), model and endpointing.

    ``keepalive_s``: send ``KeepAlive`` after this long without audio (Deepgram: every 3-5 s, or the
    socket closes after 10 s). ``close_timeout_s``: how long ``finish`` waits for the server's own
    close after ``CloseStream`` before closing from this side.
    """

    def __init__(self, api_key: str, *, base_url: str = DEFAULT_BASE_URL, model: str = "nova-3",
                 encoding: Encoding = "linear16", language: str | None = None,
                 endpointing_ms: int | None = 300, utterance_end_ms: int | None = 1000,
                 interim_results: bool = True, vad_events: bool = True, keepalive_s: float = 4.0,
                 open_timeout_s: float = 10.0, close_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not api_key:
            raise SttError("deepgram: no API key (set DEEPGRAM_API_KEY)")
        self._api_key = api_key
        self.base_url = base_url
        self.options = DeepgramOptions(model=model, encoding=encoding, language=language,
                                       interim_results=interim_results, endpointing_ms=endpointing_ms,
                                       utterance_end_ms=utterance_end_ms, vad_events=vad_events)
        self.keepalive_s, self.open_timeout_s, self.close_timeout_s = keepalive_s, open_timeout_s, close_timeout_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"DeepgramTranscriber(base_url={self.base_url!r}, model={self.options.model!r}, api_key=***)"

    def stream(self, rate: int = 8000) -> DeepgramStream:
        options = dataclasses.replace(self.options, sample_rate=rate)
        return DeepgramStream(self, listen_url(self.base_url, options), options.encoding)

    async def connect(self, url: str) -> ClientConnection:
        """Open the socket or raise `SttError` naming the status and Deepgram's ``dg-error``, not the key."""
        try:
            return await connect(url, additional_headers={"Authorization": f"Token {self._api_key}"},
                                 open_timeout=self.open_timeout_s, max_size=2**20, logger=socket_log)
        except InvalidStatus as exc:
            status = exc.response.status_code
            detail = self.redact(_dg_error(exc.response.headers.get("dg-error", "")))
            what = "refused the API key" if status in (401, 403) else "refused the connection"
            message = f"deepgram: the server {what} (HTTP {status}{f': {detail}' if detail else ''})"
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            message = f"deepgram: cannot connect to {self.base_url} ({type(exc).__name__})"
        raise SttError(message)

    def redact(self, text: str) -> str:
        """``text`` with the key masked, short enough for one log line."""
        return text.replace(self._api_key, "***")[:160]

    def now(self) -> float:
        return self._clock()


def _dg_error(header: str) -> str:
    """Deepgram's ``dg-error`` header, JSON with ``err_code`` and ``err_msg``: as one short phrase."""
    try:
        body = json.loads(header)
    except ValueError:
        return header
    if isinstance(body, dict):
        return ": ".join(str(body[k]) for k in ("err_code", "err_msg") if isinstance(body.get(k), str))
    return header


class DeepgramStream:
    """One ``/v1/listen`` connection; see `bridge.agents.stt.base` for how to use a stream."""

    def __init__(self, owner: DeepgramTranscriber, url: str, encoding: Encoding) -> None:
        self._owner, self.url, self._encoding = owner, url, encoding
        self._ws: ClientConnection | None = None
        self._feed = EventFeed()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_sent = 0.0
        self._finishing = False
        self._leaving = False
        self._dropped_bytes = 0
        self.metadata: DeepgramMetadata | None = None
        self.keepalives_sent = 0

    async def __aenter__(self) -> DeepgramStream:
        self._ws = await self._owner.connect(self.url)
        request_id = self._ws.response.headers.get("dg-request-id", "") if self._ws.response else ""
        log.info("deepgram stream open (%s, request %s)", self.url.split("?")[0], request_id or "?")
        self._last_sent = time.monotonic()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._keep_alive())]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._leaving = True
        if self._ws is not None and not self._finishing:
            await self._ws.close()
        if self._tasks:
            reader = self._tasks[0]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), self._owner.close_timeout_s)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ws is not None:
            await self._ws.close()
        self._feed.close(SttClosed(at=self._owner.now(), clean=False, reason="closed before finish"))

    @property
    def closed(self) -> bool:
        return self._feed.closed is not None

    async def send(self, pcm: bytes) -> None:
        """One binary frame of audio (mu-law-encoded first when the stream asked for ``mulaw``)."""
        if self._ws is None or self._finishing or self.closed:
            self._drop(len(pcm))
            return
        payload = pcm_to_ulaw(pcm[: len(pcm) // 2 * 2]) if self._encoding == "mulaw" else pcm
        try:
            await self._ws.send(payload)
        except ConnectionClosed:
            self._drop(len(pcm))
            return
        self._last_sent = time.monotonic()

    def _drop(self, size: int) -> None:
        if self._dropped_bytes == 0:
            log.warning("deepgram stream closed: dropping the caller's audio from here on")
        self._dropped_bytes += size

    async def keep_alive(self) -> None:
        await self._control(KEEP_ALIVE)
        self.keepalives_sent += 1

    async def finalize(self) -> None:
        """Ask for final results for all audio sent so far, without closing (e.g. at a barge-in)."""
        await self._control(FINALIZE)

    async def finish(self) -> None:
        """``CloseStream``: the server sends its last results and ``Metadata``, then closes."""
        if self._finishing or self.closed:
            return
        await self._control(CLOSE_STREAM)
        self._finishing = True
        self._tasks.append(asyncio.create_task(self._close_after(self._owner.close_timeout_s)))

    async def _control(self, message: str) -> None:
        if self._ws is None or self._finishing or self.closed:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(message)  # a str goes as a text frame, as Deepgram requires
            self._last_sent = time.monotonic()

    def events(self) -> AsyncIterator[SttEvent]:
        return self._feed.events()

    def transcripts(self) -> AsyncIterator[Transcript]:
        return self._feed.transcripts()

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                self._handle(raw)
        except ConnectionClosed:
            pass
        finally:
            self._closed_by_server()

    def _handle(self, raw: str | bytes) -> None:
        event = decode(raw, self._owner.now())
        if isinstance(event, Malformed):
            log.error("deepgram: skipped %s", event.reason)
        elif isinstance(event, ServerError):
            log.error("deepgram reported an error: %s", self._owner.redact(event.description))
        elif isinstance(event, DeepgramMetadata):
            self.metadata = event
        elif event is not None:
            self._feed.put(event)

    def _closed_by_server(self) -> None:
        assert self._ws is not None
        code = self._ws.close_code or 1006
        detail = self._owner.redact(self._ws.close_reason or "")
        reason = f"closed {code}{f' {detail}' if detail else ''}"
        clean = self._finishing and code == 1000
        if self._leaving and not clean:
            reason = "closed before finish"
        elif not clean and not self.closed:
            log.error("deepgram stream ended: %s", reason)
        self._feed.close(SttClosed(at=self._owner.now(), clean=clean, reason="" if clean else reason))

    async def _keep_alive(self) -> None:
        period = self._owner.keepalive_s
        while not self._finishing and not self.closed:
            await asyncio.sleep(max(0.05, self._last_sent + period - time.monotonic()))
            if time.monotonic() - self._last_sent >= period and not self._finishing:
                await self.keep_alive()

    async def _close_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self._ws is not None and not self.closed:
            log.warning("deepgram did not close %.1f s after CloseStream; closing", seconds)
            await self._ws.close()
