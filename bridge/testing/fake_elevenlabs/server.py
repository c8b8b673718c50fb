"""The fake ElevenLabs server: handshake, connection records and the helpers tests assert with.

It accepts on the multi-context path only, hands each socket to a
:class:`~bridge.testing.fake_elevenlabs.connection.ConnectionRunner`, and keeps every
:class:`ConnectionRecord` after the socket has closed. Its fault knobs come from
:class:`~bridge.testing.fake_elevenlabs.faults.FaultKnobs`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from bridge.testing.fake_elevenlabs.connection import ConnectionRecord, ConnectionRunner
from bridge.testing.fake_elevenlabs.context import FakeContext
from bridge.testing.fake_elevenlabs.faults import FaultKnobs
from bridge.testing.fake_elevenlabs.protocol import (
    INVALID_KEY_FRAME,
    Failure,
    MultiContextSession,
    SessionParams,
    error_frame,
)

__all__ = ["MAX_MESSAGE_BYTES", "PATH_RE", "Casing", "FakeElevenLabs"]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
PATH_RE = re.compile(r"^/v1/text-to-speech/(?P<voice_id>[^/]+)/multi-stream-input$")

Casing = Literal["camel", "snake"]


class FakeElevenLabs(FaultKnobs):
    """A multi-context TTS server on 127.0.0.1 for tests, benchmarks and manual tries.

    Use as ``async with FakeElevenLabs(api_key="test-key", ttfb=0.01) as fake:`` and point the
    client at ``fake.base_url``. ``api_key=None`` accepts any (or no) key. ``ttfb``,
    ``realtime_factor`` and the fault knobs (``reject_connections``, ``error_on_connect``...) are
    plain attributes that may be changed while the server runs.
    """

    def __init__(
        self,
        api_key: str | None = "test-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ttfb: float = 0.08,
        realtime_factor: float | None = 4.0,
        ms_per_char: float = 55.0,
        casing: Casing = "camel",
        chunk_ms: tuple[float, float] = (40.0, 300.0),
        split_samples: bool = False,
        close_race_ms: float = 0.0,
        timeout_scale: float = 1.0,
        seed: int = 0,
        tone_hz: float = 400.0,
        reject_connections: int = 0,
        error_on_connect: dict[str, Any] | None = None,
        handshake_s: float = 0.0,
    ) -> None:
        """
        Args:
            ttfb: seconds from a generation trigger (flush, schedule step, close) to its first audio.
            realtime_factor: audio is sent this many times faster than real time; ``None``/0 = no pacing.
            ms_per_char: audio duration per character of text.
            casing: ``"snake"`` sends ``context_id``/``is_final`` instead of ``contextId``/``isFinal``.
            chunk_ms: range of the random audio chunk durations.
            split_samples: let pcm chunks end in the middle of a 16-bit sample.
            tone_hz: the first context's tone, each next one 150 Hz higher (`tone_frequency`); from
                5000 Hz, only a call that stays wideband end to end (16 kHz) carries them.
            close_race_ms, timeout_scale, seed, reject_connections, error_on_connect: the fault
                knobs, see :class:`FaultKnobs`.
            handshake_s: seconds before the WebSocket handshake is answered, as a cloud server's
                TLS and upgrade round trips take (0 on loopback).
        """
        if casing not in ("camel", "snake"):
            raise ValueError(f"casing must be 'camel' or 'snake', not {casing!r}")
        if ms_per_char <= 0 or not 0 < chunk_ms[0] <= chunk_ms[1]:
            raise ValueError("ms_per_char and chunk_ms must be positive")
        super().__init__(
            reject_connections=reject_connections,
            error_on_connect=error_on_connect,
            close_race_ms=close_race_ms,
            timeout_scale=timeout_scale,
            seed=seed,
        )
        self.api_key = api_key
        self.host = host
        self.port = port
        self.ttfb = ttfb
        self.handshake_s = handshake_s
        self.realtime_factor = realtime_factor
        self.ms_per_char = ms_per_char
        self.casing: Casing = casing
        self.chunk_ms = chunk_ms
        self.split_samples = split_samples
        self.tone_hz = tone_hz
        self.connections: list[ConnectionRecord] = []
        self.rejected: list[tuple[str, int]] = []  # (request path, HTTP status) of refused handshakes
        self._server: Server | None = None
        self._live: dict[ConnectionRecord, ConnectionRunner] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeElevenLabs:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            close_timeout=2,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every connection (1001) and wait until every handler and worker has ended."""
        if self._server is None:
            return
        self.generation_gate.set()
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    @property
    def base_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def keys(self) -> tuple[str, str]:
        """The (context id, final flag) field names the server sends."""
        return ("contextId", "isFinal") if self.casing == "camel" else ("context_id", "is_final")

    def stream_url(self, voice_id: str = "fake-voice", **query: str | int | bool) -> str:
        """Convenience URL for tests: ``fake.stream_url(output_format="ulaw_8000", auto_mode=True)``."""
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in query.items()}
        return f"{self.base_url}/v1/text-to-speech/{voice_id}/multi-stream-input?{urlencode(params)}"

    # -- handshake ----------------------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.handshake_s > 0:
            await asyncio.sleep(self.handshake_s)
        parts = urlsplit(request.path)
        if not PATH_RE.match(parts.path):
            return self._refuse(connection, request, HTTPStatus.NOT_FOUND, "Not Found\n")
        if self.take_rejection():
            return self._refuse(connection, request, HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        if dict(parse_qsl(parts.query)).get("model_id") == "eleven_v3":
            return self._refuse(
                connection, request, HTTPStatus.FORBIDDEN, "eleven_v3 is not available here\n"
            )
        return None

    def _refuse(
        self, connection: ServerConnection, request: Request, status: HTTPStatus, text: str
    ) -> Response:
        self.rejected.append((request.path, int(status)))
        return connection.respond(status, text)

    async def _handle(self, ws: ServerConnection) -> None:
        record, refusal = self._admit(ws)
        runner = ConnectionRunner(self, ws, record, refusal)
        self._live[record] = runner
        try:
            await runner.run()
        finally:
            del self._live[record]

    def _admit(self, ws: ServerConnection) -> tuple[ConnectionRecord, Failure | None]:
        """Record the connection, and decide whether it is refused right after the accept."""
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        match = PATH_RE.match(parts.path)
        query = dict(parse_qsl(parts.query))
        refusal: Failure | None = None
        try:
            params = dataclasses.replace(self.session_params(query), tone_hz=self.tone_hz)
        except ValueError as exc:
            params = SessionParams(seed=self.seed)
            refusal = Failure(error_frame("invalid_request", str(exc)))
        record = ConnectionRecord(
            index=len(self.connections),
            voice_id=match["voice_id"] if match else "",
            headers={k.lower(): v for k, v in ws.request.headers.raw_items()},
            query=query,
            session=MultiContextSession(params, time.monotonic()),
        )
        self.connections.append(record)
        if self.api_key is not None and record.headers.get("xi-api-key") != self.api_key:
            refusal = Failure(dict(INVALID_KEY_FRAME))
        elif refusal is None:
            refusal = self.error_after_accept()
        if refusal is not None:
            record.session.violations.append(f"refused after accept: {refusal.reason}")
        return record, refusal

    # -- fault injection ----------------------------------------------------------------------

    async def drop_all(self, code: int = 1011, reason: str = "") -> None:
        """Close every live connection abruptly with ``code`` (no error frame, no isFinal)."""
        runners = list(self._live.values())
        for runner in runners:
            runner.request_close(Failure({}, code=code, close_text=reason))
        await asyncio.gather(*(runner.finished.wait() for runner in runners))

    # -- assertions helpers -------------------------------------------------------------------

    @property
    def live_connections(self) -> int:
        return len(self._live)

    def frequency_of(self, context_id: str, conn_index: int | None = None) -> float:
        """The tone of that context (the latest connection that used the id, unless told)."""
        return self._find(context_id, conn_index).frequency

    def contexts(self, conn_index: int = -1) -> dict[str, FakeContext]:
        """Per-context state of one connection; a reused id maps to its latest incarnation."""
        return {ctx.context_id: ctx for ctx in self.connections[conn_index].contexts}

    def audio_after_close(self, context_id: str, conn_index: int | None = None) -> bytes:
        """The audio bytes of that context sent after its close arrived (the real service does that)."""
        return bytes(self._find(context_id, conn_index).audio_after_close)

    def _find(self, context_id: str, conn_index: int | None) -> FakeContext:
        records = [self.connections[conn_index]] if conn_index is not None else reversed(self.connections)
        for record in records:
            ctx = record.session.find(context_id)
            if ctx is not None:
                return ctx
        raise KeyError(context_id)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
        """Poll ``predicate`` until it holds; raises ``TimeoutError`` so a test never hangs."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)

