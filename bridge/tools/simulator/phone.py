"""The phone: an asyncio client that dials a bridge the way Twilio Media Streams do.

Three tasks share one socket: the line clock sends the caller's audio every 20 ms against a fixed
start time (so it cannot drift, and a late wake-up is caught up, not lost), the reader time-stamps
what the bridge sends and hands it to the pure playback model, and the echo task sends each mark back
when that model says its audio has played. One lock keeps `sequenceNumber` in sending order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import wave
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bridge.core.audio import pcm_to_ulaw, ulaw_to_pcm
from bridge.tools.simulator import wire
from bridge.tools.simulator.audio import FRAME_BYTES, FRAME_SECONDS, SAMPLE_RATE, Timeline
from bridge.tools.simulator.carriers import Dialect
from bridge.tools.simulator.playback import MarkEcho, PlaybackBuffer, render
from bridge.tools.simulator.report import CallLog, CallReport, build_report

__all__ = ["TWILIO_USER_AGENT", "PhoneCall", "run_call"]

TWILIO_USER_AGENT = "Twilio.TmeWs/1.0"  # as captured on real Media Streams upgrades


class PhoneCall:
    """One simulated call. `await run()` (or `start()` then `wait()`, or `async with`) plays it out."""

    def __init__(
        self,
        url: str,
        *,
        caller: Timeline,
        duration: float,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        account_sid: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        auth_token: str | None = None,
        signed_url: str | None = None,
        jitter_delay: float = 0.0,
        open_timeout: float = 10.0,
        dialect: Dialect | None = None,
        echo: tuple[float, float] | None = None,
    ) -> None:
        self.dialect = dialect if dialect is not None else Dialect()  # Twilio's, unless told otherwise
        if urlsplit(url).query and not self.dialect.query_allowed:
            raise ValueError("Twilio <Stream> URLs cannot carry a query string; use custom_parameters")
        if duration <= 0:
            raise ValueError("duration must be positive")
        self.url, self.duration, self.open_timeout = url, duration, open_timeout
        self.ids = wire.StreamIds.new(account_sid, stream_sid, call_sid)
        self.custom_parameters = dict(custom_parameters or {})
        self.headers = dict(extra_headers or {})
        if auth_token is not None:  # what Twilio signs: the stream URL, no parameters (protocols.md §2.7)
            digest = hmac.new(auth_token.encode(), (signed_url or url).encode(), hashlib.sha1).digest()
            self.headers["X-Twilio-Signature"] = base64.b64encode(digest).decode()
        self._n_frames = max(1, round(duration / FRAME_SECONDS))
        self._ulaw = pcm_to_ulaw(caller.render(self._n_frames * FRAME_SECONDS))
        self._echo = echo  # (loss dB, delay s): the agent as played comes back on the line, a speakerphone
        self.log = CallLog(caller, PlaybackBuffer(jitter_delay))
        self.started = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._t0 = 0.0
        self._seq = 0
        self._frames_sent = 0
        self._send_lock = asyncio.Lock()
        self._finish_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._outbox: deque[MarkEcho] = deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._acks: set[asyncio.Task[None]] = set()  # acknowledgements of a clear, on their way
        self._finished = False
        self._warned: set[str] = set()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect, send `connected` and `start`, and start the line clock. Time 0 is `start` sent."""
        self._ws = await connect(
            self.url,
            additional_headers=self.headers,
            user_agent_header=TWILIO_USER_AGENT,
            compression=None,  # Twilio's upgrade offers no permessage-deflate
            max_size=None,  # "the audio can be of any size"
            open_timeout=self.open_timeout,
            close_timeout=5,
        )
        first = self.dialect.connected(self.ids)
        if first is not None:
            await self._ws.send(first)
        self._t0 = asyncio.get_running_loop().time()
        await self._send_event(self.dialect.start, self.ids, self.custom_parameters)
        self._tasks = [
            asyncio.create_task(self._line_clock(), name="phone-line"),
            asyncio.create_task(self._reader(), name="phone-reader"),
            asyncio.create_task(self._echo_loop(), name="phone-echo"),
        ]
        self.started.set()

    async def wait(self) -> CallReport:
        """Until `duration` passes (then `stop` and close) or the server closes the socket."""
        if self._tasks and not self._finished:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        await self._finish()
        return self.report()

    async def run(self) -> CallReport:
        await self.start()
        return await self.wait()

    async def hangup(self) -> CallReport:
        """End the call now, as the caller hanging up would: `stop`, then close."""
        await self._finish()
        return self.report()

    async def __aenter__(self) -> PhoneCall:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.wait()
        else:
            await self._finish()

    # ----------------------------------------------------------------- injection

    async def send_raw(self, data: str | bytes) -> None:
        """Send any frame as-is (no sequence number), to test how the bridge copes with faults."""
        async with self._send_lock:
            await self._socket().send(data)

    async def press(self, digit: str) -> None:
        """Send a `dtmf` event, as Twilio does when the caller presses a key."""
        await self._send_event(self.dialect.dtmf, self.ids, digit)

    # ----------------------------------------------------------------- results

    def now(self) -> float:
        """Seconds since `start` was sent."""
        return asyncio.get_running_loop().time() - self._t0 if self._t0 else 0.0

    @property
    def stream_sid(self) -> str:
        return self.ids.stream_sid

    @property
    def heard(self) -> bytes:
        """Agent audio as played, 8 kHz PCM16 from `start` sent to the end (or now), silence between."""
        until = self.log.ended_at if self.log.ended_at is not None else self.now()
        return render(self.log.playback.played, until)

    @property
    def caller_pcm(self) -> bytes:
        """The caller's audio as sent on the line (after µ-law), on the same timeline as `heard`."""
        return ulaw_to_pcm(self._ulaw[: self._frames_sent * FRAME_BYTES])

    def report(self) -> CallReport:
        return build_report(self.log)

    def timeline_text(self, marks: bool = True) -> str:
        return self.report().timeline_text(marks)

    def write_wav(self, path: str | Path) -> None:
        """Stereo 8 kHz 16-bit WAV: caller on the left, the agent as heard on the right."""
        left = np.frombuffer(self.caller_pcm, dtype="<i2")
        right = np.frombuffer(self.heard, dtype="<i2")
        stereo = np.zeros((max(len(left), len(right)), 2), dtype="<i2")
        stereo[: len(left), 0], stereo[: len(right), 1] = left, right
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(stereo.tobytes())

    # ----------------------------------------------------------------- tasks

    def _socket(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("the call has not started")
        return self._ws

    async def _send_event(self, build: Callable[..., str | bytes | None], *args: Any) -> bool:
        """Number and send one event (none if the dialect has nothing to send); False once closed."""
        async with self._send_lock:
            self._seq += 1
            try:
                message = build(self._seq, *args)
                if message is not None:
                    await self._socket().send(message)
            except ConnectionClosed:
                return False
        return True

    async def _line_clock(self) -> None:
        loop = asyncio.get_running_loop()
        for k in range(self._n_frames):
            deadline = self._t0 + (k + 1) * FRAME_SECONDS  # a frame leaves once its 20 ms are captured
            if (delay := deadline - loop.time()) > 0:
                await asyncio.sleep(delay)
            self.log.max_send_lag = max(self.log.max_send_lag, loop.time() - deadline)
            chunk = self._ulaw[k * FRAME_BYTES : (k + 1) * FRAME_BYTES]
            if self._echo is not None:
                chunk = self._with_echo(chunk, k)
            if not await self._send_event(self.dialect.media, self.ids, k + 1, k * 20, chunk):
                return
            self._frames_sent = k + 1

    def _with_echo(self, chunk: bytes, k: int) -> bytes:
        """Frame ``k`` of the caller's µ-law with the agent's echo added: what played ``delay``
        earlier, ``loss`` dB down (µ-law both ways, as a phone line carries it)."""
        assert self._echo is not None
        loss_db, delay = self._echo
        end = (k + 1) * FRAME_SECONDS - delay
        played = self.log.playback.heard_between(end - FRAME_SECONDS, end)
        echo = np.frombuffer(ulaw_to_pcm(played), "<i2") * 10 ** (-loss_db / 20)
        line = np.frombuffer(ulaw_to_pcm(chunk), "<i2") + echo
        return pcm_to_ulaw(np.clip(np.round(line), -32768, 32767).astype("<i2").tobytes())

    async def _reader(self) -> None:
        ws = self._socket()
        try:
            async for raw in ws:
                self._receive(self.now(), raw)
        except ConnectionClosed:
            pass
        self.log.server_closed = self.now()
        self.log.close_code, self.log.close_reason = ws.close_code, ws.close_reason or ""

    def _receive(self, now: float, raw: str | bytes) -> None:
        message = self.dialect.parse(raw, self.ids)
        playback = self.log.playback
        match message:
            case wire.AgentMedia(ulaw=ulaw, warning=warning):
                self.log.media_received.append((now, len(ulaw)))
                playback.push_audio(now, ulaw)
                if warning and warning not in self._warned:
                    self._warned.add(warning)
                    self.log.warnings.append((now, warning))
            case wire.AgentMark(name=name):
                self.log.marks_received.append((now, name))
                playback.push_mark(now, name)
                self._wake.set()
            case wire.AgentClear():
                echoes = playback.clear(now)
                self._outbox.extend(e for e in echoes if self.dialect.echo_cleared_marks or not e.cleared)
                self._wake.set()
                if (ack := self.dialect.cleared(0, self.ids)) is not None:
                    task = asyncio.get_running_loop().create_task(self._send_ack(ack))
                    self._acks.add(task)
                    task.add_done_callback(self._acks.discard)
            case wire.Malformed(reason=reason):
                self.log.malformed.append((now, reason))

    async def _send_ack(self, ack: str | bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.send_raw(ack)

    async def _echo_loop(self) -> None:
        while True:
            self._wake.clear()
            if not await self._send_echoes(self.now()):
                return
            due = self.log.playback.next_mark_due()
            if due is None:
                await self._wake.wait()
                continue
            try:
                async with asyncio.timeout_at(self._t0 + due):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _send_echoes(self, now: float) -> bool:
        self._outbox.extend(self.log.playback.due_marks(now))
        while self._outbox:
            echo = self._outbox.popleft()
            at = self.now()
            self.log.max_send_lag = max(self.log.max_send_lag, at - echo.at)
            if not await self._send_event(self.dialect.mark_echo, self.ids, echo.name):
                return False
            self.log.marks_sent.append((at, echo.name, echo.cleared))
        return True

    async def _finish(self) -> None:
        async with self._finish_lock:
            if self._finished:
                return
            self._finished = True
            errors = await self._stop_tasks()
            end = self._note_server_close()
            if end is None:  # we end the call: pending echoes that are due, then `stop`
                end = min(self.now(), self._n_frames * 20 / 1000)
                await self._send_echoes(end)
                self.log.stop_sent = self.now()
                await self._send_event(self.dialect.stop, self.ids)
            self.log.marks_unechoed = self.log.playback.close(end)
            self.log.ended_at = end
            if self._ws is not None:
                await self._ws.close()
            if errors:
                raise errors[0]

    def _note_server_close(self) -> float | None:
        """When the server closed the socket, if it did (the reader may have been cancelled first)."""
        ws = self._ws
        if ws is None:
            return self.now()
        if self.log.server_closed is None and ws.state is not State.OPEN:
            self.log.server_closed = self.now()
            self.log.close_code, self.log.close_reason = ws.close_code, ws.close_reason or ""
        return self.log.server_closed

    async def _stop_tasks(self) -> list[BaseException]:
        """Cancel the three tasks; return any real error one of them hit (a simulator bug)."""
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        return [r for r in results if isinstance(r, Exception) and not isinstance(r, ConnectionClosed)]


async def run_call(url: str, caller: Timeline, duration: float, **kw: Any) -> CallReport:
    """Dial `url`, play `caller` for `duration` seconds, and return the report."""
    return await PhoneCall(url, caller=caller, duration=duration, **kw).run()
