"""A local stand-in for ElevenLabs' multi-context TTS WebSocket, faithful enough to test a bridge against.

Tests and benchmarks cannot use the real service (it costs money, needs a key, and its timing
is not reproducible), but a mock that is *nicer* than the real thing hides exactly the bugs that
matter. So this server reproduces the behaviour documented in ``shared/protocols.md`` §1,
including the unpleasant parts:

* ``flush`` never yields ``isFinal``; only ``close_context`` (or a server-side timeout, or
  ``close_socket``) does, and ``close_context`` is graceful: held text is still voiced, and that
  audio arrives *after* the close (§1.6.1-2).
* A closed context keeps its slot until its ``isFinal`` has been sent; a message for a sixth id
  while five are open or draining gets ``max_active_conversations`` and a 1008 close (§1.6.3).
* Any message for an unknown id opens a context implicitly (a "phantom" one); a later
  ``voice_settings`` for an open id closes the socket with 1008 (§1.3, pipecat's observation).
* Text is buffered until the ``chunk_length_schedule`` step is reached, unless ``flush``,
  ``close_context`` or ``auto_mode=true`` (§1.8).
* Audio chunks have arbitrary sizes, never aligned to 20 ms (§1.4).
* Optional: the close-before-synthesis race of §1.6.4 (``close_race_ms``).

The audio is a tone whose frequency identifies the context (:meth:`FakeElevenLabs.frequency_of`),
so a test can tell from what reaches the phone whose audio it is hearing, even after µ-law and
resampling.

Choices where protocols.md says [U] (documented here because tests rely on them):

* Bad or missing ``xi-api-key``: the handshake succeeds, then the server sends
  ``{"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}`` and closes 1008.
* A context idle for ``inactivity_timeout`` is closed by the server like ``close_context``,
  except that text it still held *unflushed* is discarded; audio already triggered finishes,
  then ``isFinal`` is sent and the id is listed in ``timed_out``. If the whole socket saw no
  message for that long, the socket-level ``input_timeout_exceeded`` error wins instead.
* ``close_socket`` finishes work that was already triggered (flushed or past a schedule step),
  discards unflushed text, sends every ``isFinal`` and closes 1000.
* ``flush`` restarts the ``chunk_length_schedule`` at its first step.
* Messages for a context that is closed but still draining are ignored (and recorded as a
  violation); once its ``isFinal`` is out, the id may be reused for a new, unrelated context.
* A ``voice_settings`` for an already open id is rejected with ``invalid_input_message`` 1008.
* A message without ``context_id`` other than the ``{"text": ""}`` keep-alive is ignored.
* An unsupported or missing ``output_format`` (the fake only makes ``ulaw_8000`` and ``pcm_*``)
  or a malformed query value gets an ``invalid_request`` error frame and 1008.
* Every audio chunk carries ``alignment`` and ``normalizedAlignment`` (identical) only when
  ``sync_alignment=true``.

Run it by hand with ``python -m bridge.testing.fake_elevenlabs --port 9000 --api-key test``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

__all__ = [
    "DEFAULT_SCHEDULE",
    "MAX_CONTEXTS",
    "SAMPLE_RATES",
    "ConnectionRecord",
    "Failure",
    "FakeContext",
    "FakeElevenLabs",
    "MultiContextSession",
    "Segment",
    "SentFrame",
    "SessionParams",
    "chunk_alignment",
    "main",
    "parse_query",
    "plan_chunks",
    "render_tone",
    "tone_frequency",
    "ulaw_encode",
]

log = logging.getLogger("bridge.testing.fake_elevenlabs")

MAX_CONTEXTS = 5
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_SCHEDULE: tuple[int, ...] = (120, 160, 250, 290)
DEFAULT_INACTIVITY_S = 20.0
MAX_INACTIVITY_S = 180.0
SAMPLE_RATES: dict[str, int] = {
    "ulaw_8000": 8000,
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
}
PATH_RE = re.compile(r"^/v1/text-to-speech/(?P<voice_id>[^/]+)/multi-stream-input$")
MAX_CONTEXTS_MESSAGE = (
    "Maximum simultaneous contexts per WebSocket connection exceeded (5). "
    "Please close an existing context before opening a new one."
)
INVALID_KEY_FRAME: dict[str, Any] = {"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}
SETTINGS_FIELDS = ("voice_settings", "generation_config", "pronunciation_dictionary_locators")

Casing = Literal["camel", "snake"]


# --------------------------------------------------------------------------------------------
# Audio: a per-context tone, µ-law, chunking, alignment. Pure functions, no I/O.
# --------------------------------------------------------------------------------------------

TONE_PEAK = 10 ** (-12 / 20)  # -12 dBFS: loud enough for any VAD, far from clipping after resampling
ENVELOPE_HZ = 4.0  # roughly the syllable rate, so energy-based detectors see "speech-like" bursts


def tone_frequency(index: int) -> float:
    """Frequency for the ``index``-th context of a connection: 400 to 2650 Hz, below 8 kHz Nyquist."""
    return 400.0 + 150.0 * (index % 16)


def render_tone(frequency: float, rate: int, start: int, count: int) -> np.ndarray:
    """``count`` int16 samples of the amplitude-modulated tone, from sample ``start`` on.

    Rendering from an absolute sample index keeps the phase continuous across segments, so a
    context's audio is one clean tone however it was chunked.
    """
    t = (np.arange(count, dtype=np.float64) + start) / rate
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * ENVELOPE_HZ * t)
    wave = TONE_PEAK * envelope * np.sin(2 * np.pi * frequency * t)
    return np.round(wave * 32767).astype(np.int16)


def ulaw_encode(samples: np.ndarray) -> bytes:
    """G.711 µ-law of int16 samples (bias 132, clip 32635), vectorised because audioop is gone in 3.13."""
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded: bytes = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()
    return encoded


def encode_samples(samples: np.ndarray, output_format: str) -> bytes:
    """Samples in the wire encoding: µ-law bytes, or raw s16le for every ``pcm_*``."""
    if output_format == "ulaw_8000":
        return ulaw_encode(samples)
    return samples.astype("<i2").tobytes()


def sample_width(output_format: str) -> int:
    return 1 if output_format == "ulaw_8000" else 2


def plan_chunks(
    total: int,
    bytes_per_ms: float,
    rng: random.Random,
    *,
    granule: int = 1,
    chunk_ms: tuple[float, float] = (40.0, 300.0),
) -> list[int]:
    """Byte sizes that add up to ``total``, each a random 40 to 300 ms: deliberately not 20 ms frames.

    ``granule`` is the smallest unit a chunk may be cut at (2 keeps s16le samples whole, 1 lets a
    chunk end in the middle of a sample).
    """
    sizes: list[int] = []
    remaining = total
    while remaining > 0:
        size = round(rng.uniform(*chunk_ms) * bytes_per_ms)
        size -= size % granule
        size = max(granule, min(size, remaining))
        sizes.append(size)
        remaining -= size
    return sizes


def chunk_alignment(
    text: str, ms_per_char: float, start_ms: float, end_ms: float, last: bool
) -> dict[str, list[Any]]:
    """Alignment for the characters whose start falls in ``[start_ms, end_ms)``, times relative to the chunk.

    Each character gets an equal ``ms_per_char`` slot; the last chunk takes any stragglers so
    every character is reported exactly once per segment.
    """
    first = max(0, math.ceil(start_ms / ms_per_char - 1e-9))
    stop = len(text) if last else min(len(text), math.ceil(end_ms / ms_per_char - 1e-9))
    indices = range(first, stop)
    return {
        "chars": [text[i] for i in indices],
        "charStartTimesMs": [max(0, round(i * ms_per_char - start_ms)) for i in indices],
        "charDurationsMs": [round(ms_per_char) for _ in indices],
    }


# --------------------------------------------------------------------------------------------
# Protocol state: contexts, buffering, slots, timeouts. Plain classes, no I/O, no clocks.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionParams:
    """What one connection asked for in its query string, plus the fake's knobs that shape it."""

    output_format: str = "ulaw_8000"
    sync_alignment: bool = False
    auto_mode: bool = False
    inactivity_timeout: float = DEFAULT_INACTIVITY_S  # effective seconds, already scaled
    close_race_s: float = 0.0
    seed: int = 0

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATES[self.output_format]


@dataclass(frozen=True)
class Failure:
    """How the server ends a socket: send ``frame`` (unless empty), then close with ``code``.

    Mostly a failure (1008 with an error frame), but also the clean 1000 after ``close_socket``
    and the bare close of :meth:`FakeElevenLabs.drop_all`, so every ending takes the same path.
    """

    frame: dict[str, Any]
    code: int = 1008
    close_text: str | None = None  # the close frame's reason; defaults to the error code

    @property
    def error(self) -> str | None:
        return str(self.frame["error"]) if "error" in self.frame else None

    @property
    def reason(self) -> str:
        return self.close_text if self.close_text is not None else self.error or ""


def error_frame(error: str, message: str) -> dict[str, Any]:
    """The observed error shape (§1.5)."""
    return {"message": message, "error": error, "code": 1008}


@dataclass(frozen=True)
class Segment:
    """Text whose generation was triggered (by a schedule step, flush, close or auto_mode)."""

    text: str
    triggered_at: float


@dataclass(eq=False)
class FakeContext:
    """One server-side context: its buffer, its generation queue, and what happened to it.

    Identity-hashed on purpose: a reused id is a different context.
    """

    context_id: str
    index: int
    opened_at: float
    implicit: bool
    rng: random.Random
    voice_settings: dict[str, Any] | None = None
    generation_config: dict[str, Any] | None = None
    schedule: tuple[int, ...] = DEFAULT_SCHEDULE
    text: str = ""  # every character received, concatenated as sent
    flushes: int = 0
    buffer: str = ""  # received, not yet triggered
    step: int = 0  # position in the chunk_length_schedule
    pending: deque[Segment] = field(default_factory=deque)  # triggered, not yet voiced
    last_input: float = 0.0
    last_text_at: float | None = None
    closed: bool = False
    close_reason: str | None = None  # "close_context" | "inactivity" | "close_socket"
    closed_at: float | None = None
    race_dropped: bool = False
    dropped_text: str = ""
    streaming_started: bool = False
    audio_bytes: int = 0
    chunks: int = 0
    audio_after_close: bytearray = field(default_factory=bytearray)
    final_sent: bool = False
    samples_rendered: int = 0

    @property
    def frequency(self) -> float:
        return tone_frequency(self.index)

    @property
    def timed_out(self) -> bool:
        return self.close_reason == "inactivity"

    @property
    def next_threshold(self) -> int:
        return self.schedule[min(self.step, len(self.schedule) - 1)]

    def add_text(self, text: str, now: float, auto_mode: bool) -> None:
        """Buffer text; trigger generation when the schedule step is reached (or always in auto_mode)."""
        self.text += text
        self.last_text_at = now
        if not self.buffer.strip():
            self.buffer = ""  # the init's single space is not speech
        self.buffer += text
        if auto_mode:
            self.trigger(now)
        elif len(self.buffer) >= self.next_threshold:
            self.trigger(now)
            self.step += 1

    def flush(self, now: float) -> None:
        self.flushes += 1
        self.trigger(now)
        self.step = 0

    def trigger(self, now: float) -> None:
        """Move the buffer to the generation queue; whitespace alone generates nothing."""
        if self.buffer.strip():
            self.pending.append(Segment(self.buffer, now))
        self.buffer = ""

    def close(self, reason: str, now: float, *, keep_buffer: bool) -> None:
        if keep_buffer:
            self.trigger(now)
        else:
            self.dropped_text += self.buffer
            self.buffer = ""
        self.closed, self.close_reason, self.closed_at = True, reason, now

    def drop_everything(self) -> None:
        """The §1.6.4 race: the close overtook the text, nothing of it will be voiced."""
        self.dropped_text += "".join(s.text for s in self.pending) + self.buffer
        self.pending.clear()
        self.buffer = ""
        self.race_dropped = True

    def record_audio(self, chunk: bytes) -> None:
        self.audio_bytes += len(chunk)
        self.chunks += 1
        if self.closed:
            self.audio_after_close += chunk


class MultiContextSession:
    """The context table of one connection, driven by parsed client messages.

    ``receive`` and ``expire`` return a :class:`Failure` when the real server would close the
    socket; otherwise they only change state, and the I/O layer voices whatever is ``pending``.
    """

    def __init__(self, params: SessionParams, now: float) -> None:
        self.params = params
        self.active: dict[str, FakeContext] = {}  # open or draining: each holds a slot
        self.history: list[FakeContext] = []  # every context ever opened, in order
        self.violations: list[str] = []
        self.timed_out: list[str] = []
        self.max_open = 0
        self.closing = False  # close_socket received
        self.last_message_at = now

    # -- inbound ------------------------------------------------------------------------------

    def receive(self, message: Any, now: float) -> Failure | None:
        self.last_message_at = now
        if not isinstance(message, dict):
            self.violations.append("message is not a JSON object")
            return Failure(error_frame("invalid_input_message", "Invalid message: expected a JSON object."))
        if self.closing:
            self.violations.append(f"message after close_socket ignored: {sorted(message)}")
            return None
        if message.get("close_socket") is True:
            self._close_socket(now)
            return None
        problem = self._shape_problem(message)
        if problem:
            self.violations.append(problem)
            return Failure(error_frame("invalid_input_message", problem))
        context_id = message.get("context_id", message.get("contextId"))
        if context_id is None:
            self._contextless(message)
            return None
        return self._for_context(context_id, message, now)

    def _shape_problem(self, message: dict[str, Any]) -> str | None:
        if "text" in message and not isinstance(message["text"], str):
            return "Invalid message: 'text' must be a string."
        if "contextId" in message and "context_id" not in message:
            self.violations.append("client sent camelCase 'contextId'; send 'context_id'")
        context_id = message.get("context_id", message.get("contextId"))
        if context_id is not None and (not isinstance(context_id, str) or not context_id):
            return "Invalid message: 'context_id' must be a non-empty string."
        return None

    def _contextless(self, message: dict[str, Any]) -> None:
        """``{"text": ""}`` keeps the socket alive; anything else without an id is ignored."""
        if message.get("text") == "" and set(message) == {"text"}:
            return
        self.violations.append(f"message without context_id ignored: {sorted(message)}")

    def _for_context(self, context_id: str, message: dict[str, Any], now: float) -> Failure | None:
        ctx = self.active.get(context_id)
        if ctx is None:
            if len(self.active) >= MAX_CONTEXTS:
                self.violations.append(f"sixth context {context_id!r} while {MAX_CONTEXTS} hold slots")
                return Failure(error_frame("max_active_conversations", MAX_CONTEXTS_MESSAGE))
            ctx = self._open(context_id, message, now)
        elif ctx.closed:
            self.violations.append(f"message for context {context_id!r} after its close ignored")
            return None
        else:
            failure = self._check_reinit(ctx, message)
            if failure:
                return failure
        self._apply(ctx, message, now)
        return None

    def _open(self, context_id: str, message: dict[str, Any], now: float) -> FakeContext:
        text = message.get("text")
        implicit = not text  # a keep-alive, flush or close for an id nobody initialised
        ctx = FakeContext(
            context_id=context_id,
            index=len(self.history),
            opened_at=now,
            implicit=implicit,
            rng=random.Random(f"{self.params.seed}:{len(self.history)}"),
            voice_settings=message.get("voice_settings"),
            generation_config=message.get("generation_config"),
            schedule=self._schedule_of(message.get("generation_config")),
            last_input=now,
        )
        if implicit:
            self.violations.append(f"context {context_id!r} opened implicitly by {describe(message)}")
        self.active[context_id] = ctx
        self.history.append(ctx)
        self.max_open = max(self.max_open, len(self.active))
        return ctx

    def _schedule_of(self, config: Any) -> tuple[int, ...]:
        schedule = config.get("chunk_length_schedule") if isinstance(config, dict) else None
        if schedule is None:
            return DEFAULT_SCHEDULE
        if (
            isinstance(schedule, list)
            and schedule
            and all(isinstance(n, int) and 50 <= n <= 500 for n in schedule)
        ):
            return tuple(schedule)
        self.violations.append(f"chunk_length_schedule {schedule!r} invalid (items 50 to 500); default used")
        return DEFAULT_SCHEDULE

    def _check_reinit(self, ctx: FakeContext, message: dict[str, Any]) -> Failure | None:
        """Settings belong to a context's first message; a late ``voice_settings`` is fatal (§1.3)."""
        late = [name for name in SETTINGS_FIELDS if name in message]
        if not late:
            return None
        how = "implicitly opened" if ctx.implicit else "already initialised"
        self.violations.append(f"{', '.join(late)} sent for {how} context {ctx.context_id!r}")
        if "voice_settings" not in message:
            return None
        return Failure(
            error_frame(
                "invalid_input_message",
                f"voice_settings can only be sent in the first message of context {ctx.context_id!r}.",
            )
        )

    def _apply(self, ctx: FakeContext, message: dict[str, Any], now: float) -> None:
        ctx.last_input = now
        text = message.get("text")
        if text:
            if not text.endswith(" "):
                self.violations.append(
                    f"text for {ctx.context_id!r} does not end with a space: {text[-20:]!r}"
                )
            ctx.add_text(text, now, self.params.auto_mode)
        if message.get("flush") is True:
            ctx.flush(now)
        if message.get("close_context") is True:
            self._close_context(ctx, now)

    def _close_context(self, ctx: FakeContext, now: float) -> None:
        if self._is_race(ctx, now):
            ctx.drop_everything()
        ctx.close("close_context", now, keep_buffer=True)

    def _is_race(self, ctx: FakeContext, now: float) -> bool:
        """§1.6.4: a close right behind the text, before any audio of the context was made."""
        window = self.params.close_race_s
        return (
            window > 0
            and not ctx.streaming_started
            and ctx.last_text_at is not None
            and now - ctx.last_text_at <= window
            and bool(ctx.pending or ctx.buffer.strip())
        )

    def _close_socket(self, now: float) -> None:
        self.closing = True
        for ctx in self.active.values():
            if not ctx.closed:
                ctx.close("close_socket", now, keep_buffer=False)

    # -- time ---------------------------------------------------------------------------------

    def expire(self, now: float) -> Failure | None:
        """Apply the inactivity timeout: to the whole socket first, then to each open context."""
        if self.closing:
            return None
        limit = self.params.inactivity_timeout
        if now - self.last_message_at >= limit:
            self.violations.append(f"socket idle for {limit:g} s")
            return Failure(
                error_frame(
                    "input_timeout_exceeded",
                    f"Have not received a new text input within the timeout of {limit:g} seconds. "
                    "Please send a new message to avoid closing the connection.",
                )
            )
        for ctx in self.active.values():
            if not ctx.closed and now - ctx.last_input >= limit:
                ctx.close("inactivity", now, keep_buffer=False)
                self.timed_out.append(ctx.context_id)
        return None

    # -- outbound bookkeeping -----------------------------------------------------------------

    def finish(self, ctx: FakeContext) -> None:
        """Its ``isFinal`` is out: the slot is free and the id may be reused."""
        ctx.final_sent = True
        if self.active.get(ctx.context_id) is ctx:
            del self.active[ctx.context_id]

    @property
    def drained(self) -> bool:
        return self.closing and not self.active

    def find(self, context_id: str) -> FakeContext | None:
        """The latest context that had this id."""
        return next((c for c in reversed(self.history) if c.context_id == context_id), None)


def describe(message: dict[str, Any]) -> str:
    if message.get("close_context") is True:
        return "a close_context"
    if message.get("flush") is True:
        return "a flush"
    if message.get("text") == "":
        return "a keep-alive"
    return f"a message with keys {sorted(message)}"


def _parse_bool(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return lowered == "true"


def parse_query(
    query: dict[str, str], *, timeout_scale: float = 1.0, close_race_ms: float = 0.0, seed: int = 0
) -> SessionParams:
    """The connection's parameters; raises ``ValueError`` for what the fake refuses to serve."""
    output_format = query.get("output_format")
    if output_format not in SAMPLE_RATES:
        raise ValueError(
            f"output_format {output_format or 'mp3_44100_128 (default)'} is not served by the fake; "
            f"use one of {', '.join(SAMPLE_RATES)}"
        )
    timeout = float(query.get("inactivity_timeout", DEFAULT_INACTIVITY_S))
    if not 0 < timeout <= MAX_INACTIVITY_S:
        raise ValueError(f"inactivity_timeout must be in (0, 180], got {timeout:g}")
    return SessionParams(
        output_format=output_format,
        sync_alignment=_parse_bool(query.get("sync_alignment", "false"), "sync_alignment"),
        auto_mode=_parse_bool(query.get("auto_mode", "false"), "auto_mode"),
        inactivity_timeout=timeout * timeout_scale,
        close_race_s=close_race_ms / 1000,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# Records for assertions.
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# WebSocket I/O: one runner per connection, one worker task per context.
# --------------------------------------------------------------------------------------------


class _Connection:
    """Pumps one socket: a receiver, a timeout watchdog, and a worker per context that voices it.

    Whoever decides the socket must end calls :meth:`request_close`; only :meth:`run` then stops
    the tasks and closes, so the error frame is always the last thing sent before the close.
    """

    def __init__(
        self, fake: FakeElevenLabs, ws: ServerConnection, record: ConnectionRecord, refusal: Failure | None
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


# --------------------------------------------------------------------------------------------
# The server.
# --------------------------------------------------------------------------------------------


class FakeElevenLabs:
    """A multi-context TTS server on 127.0.0.1 for tests, benchmarks and manual tries.

    Use as ``async with FakeElevenLabs(api_key="test-key", ttfb=0.01) as fake:`` and point the
    client at ``fake.base_url``. ``api_key=None`` accepts any (or no) key. ``ttfb``,
    ``realtime_factor``, ``reject_connections`` and ``error_on_connect`` are plain attributes that
    may be changed while the server runs.
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
        close_race_ms: float = 0.0,
        timeout_scale: float = 1.0,
        chunk_ms: tuple[float, float] = (40.0, 300.0),
        split_samples: bool = False,
        seed: int = 0,
        reject_connections: int = 0,
        error_on_connect: dict[str, Any] | None = None,
    ) -> None:
        """
        Args:
            ttfb: seconds from a generation trigger (flush, schedule step, close) to its first audio.
            realtime_factor: audio is sent this many times faster than real time; ``None``/0 = no pacing.
            ms_per_char: audio duration per character of text.
            casing: ``"snake"`` sends ``context_id``/``is_final`` instead of ``contextId``/``isFinal``.
            close_race_ms: a close_context within this many ms of the context's last text, before
                any of its audio was made, yields isFinal with zero audio (§1.6.4). 0 = off.
            timeout_scale: multiplies the effective ``inactivity_timeout`` (20 s default), so tests
                can exercise timeouts in milliseconds.
            chunk_ms: range of the random audio chunk durations.
            split_samples: let pcm chunks end in the middle of a 16-bit sample.
            seed: seeds the chunk sizes, so runs are reproducible.
            reject_connections: refuse the next N handshakes with HTTP 503.
            error_on_connect: send this error frame and close 1008 right after every accept.
        """
        if casing not in ("camel", "snake"):
            raise ValueError(f"casing must be 'camel' or 'snake', not {casing!r}")
        if ms_per_char <= 0 or not 0 < chunk_ms[0] <= chunk_ms[1]:
            raise ValueError("ms_per_char and chunk_ms must be positive")
        self.api_key = api_key
        self.host = host
        self.port = port
        self.ttfb = ttfb
        self.realtime_factor = realtime_factor
        self.ms_per_char = ms_per_char
        self.casing: Casing = casing
        self.close_race_ms = close_race_ms
        self.timeout_scale = timeout_scale
        self.chunk_ms = chunk_ms
        self.split_samples = split_samples
        self.seed = seed
        self.reject_connections = reject_connections
        self.error_on_connect = error_on_connect
        self.connections: list[ConnectionRecord] = []
        self.rejected: list[tuple[str, int]] = []  # (request path, HTTP status) of refused handshakes
        self.generation_gate = asyncio.Event()
        self.generation_gate.set()
        self._server: Server | None = None
        self._live: dict[ConnectionRecord, _Connection] = {}

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

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if not PATH_RE.match(parts.path):
            return self._refuse(connection, request, HTTPStatus.NOT_FOUND, "Not Found\n")
        if self.reject_connections > 0:
            self.reject_connections -= 1
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
        runner = _Connection(self, ws, record, refusal)
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
            params = parse_query(
                query, timeout_scale=self.timeout_scale, close_race_ms=self.close_race_ms, seed=self.seed
            )
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
        elif refusal is None and self.error_on_connect is not None:
            refusal = Failure(dict(self.error_on_connect))
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

    def pause_generation(self) -> None:
        """Hold all audio (and finals behind it) until :meth:`resume_generation`."""
        self.generation_gate.clear()

    def resume_generation(self) -> None:
        self.generation_gate.set()

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


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.testing.fake_elevenlabs",
        description="Serve a fake ElevenLabs multi-context TTS WebSocket until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--api-key", default="test", help="expected xi-api-key; '' accepts any")
    parser.add_argument("--ttfb", type=float, default=0.08)
    parser.add_argument("--realtime-factor", type=float, default=4.0, help="0 = no pacing")
    parser.add_argument("--ms-per-char", type=float, default=55.0)
    parser.add_argument("--casing", choices=("camel", "snake"), default="camel")
    parser.add_argument("--close-race-ms", type=float, default=0.0)
    parser.add_argument("--timeout-scale", type=float, default=1.0)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeElevenLabs(
        api_key=args.api_key or None,
        host=args.host,
        port=args.port,
        ttfb=args.ttfb,
        realtime_factor=args.realtime_factor or None,
        ms_per_char=args.ms_per_char,
        casing=args.casing,
        close_race_ms=args.close_race_ms,
        timeout_scale=args.timeout_scale,
    )
    async with fake:
        print(f"fake ElevenLabs listening on {fake.base_url}", flush=True)
        await asyncio.Future()


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
