"""The asyncio shell of one call: it moves bytes and time in and out of the core, nothing else.

Reader tasks (the phone socket, the TTS socket, the agent's stream) only decode and put
events into one inbox; this loop alone calls ``Call.handle``, so the core is never entered
concurrently, and executes the actions it returns in order. Time reaches the core as a
single timer per call (``loop.call_at`` for the core's next deadline), never a task per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import assert_never

from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.actions import (
    Action,
    CancelTurn,
    ClearPlayback,
    CloseContext,
    EndCall,
    KeepAlive,
    OpenContext,
    ReplyHeard,
    SendMark,
    SendMedia,
    SendText,
    StartTurn,
)
from bridge.agents.base import Agent, Turn
from bridge.call import Call, CallSettings
from bridge.events import (
    AgentDone,
    AgentFailed,
    AgentText,
    CallEnded,
    CallStarted,
    Event,
    TelephonyMalformed,
    Tick,
    TtsClosed,
    TtsError,
)
from bridge.telephony.twilio import TwilioCodec
from bridge.tts.base import TtsClient, TtsConnectError

__all__ = ["CallSession"]

log = logging.getLogger("bridge.session")

RECONNECT_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


class CallSession:
    """Runs one call from the media socket's accept to its last byte."""

    def __init__(
        self,
        websocket: WebSocket,
        *,
        settings: CallSettings,
        tts: TtsClient,
        agent: Agent,
        start_timeout_s: float = 10.0,
        max_message_bytes: int = 64 * 1024,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.websocket = websocket
        self.call = Call(settings)
        self.codec = TwilioCodec(max_message_bytes=max_message_bytes)
        self.tts = tts
        self.agent = agent
        self.start_timeout_s = start_timeout_s
        self.on_event = on_event
        self.call_id = "?"
        self._loop = asyncio.get_running_loop()
        self._inbox: asyncio.Queue[Event] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._agent_task: asyncio.Task[None] | None = None
        self._tts_task: asyncio.Task[None] | None = None
        self._tts_lost = asyncio.Event()
        self._problems: Counter[str] = Counter()
        self._phone_open = True

    def clock(self) -> float:
        return self._loop.time()

    def put(self, event: Event) -> None:
        self._inbox.put_nowait(event)

    async def run(self) -> None:
        reader = asyncio.create_task(self._read_phone(), name="phone-reader")
        self._tts_task = asyncio.create_task(self._keep_tts_connected(), name="tts-supervisor")
        no_start = self._loop.call_later(self.start_timeout_s, self._check_started)
        try:
            await self._loop_until_ended()
        finally:
            no_start.cancel()
            if self._timer is not None:
                self._timer.cancel()
            await self._teardown(reader)

    async def _loop_until_ended(self) -> None:
        call = self.call
        while True:
            event = await self._inbox.get()
            if self.on_event is not None:
                self.on_event(event)
            self._observe(event)
            for action in call.handle(event):
                await self._execute(action)
            if call.ended:
                return
            self._arm_timer(call.next_deadline())

    def _arm_timer(self, deadline: float | None) -> None:
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._fire_timer)

    def _fire_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.put(Tick(self.clock()))

    def _check_started(self) -> None:
        if self.call.started_at is None and not self.call.ended:
            log.warning("media stream sent no 'start' within %.0f s; closing it", self.start_timeout_s)
            self.put(CallEnded(self.clock(), "no start"))

    def _observe(self, event: Event) -> None:
        """Log what a person running the bridge wants to know, once per kind of problem."""
        match event:
            case CallStarted():
                self.call_id = event.call_id or event.stream_id
                log.info("call %s started", self.call_id)
            case TelephonyMalformed():
                self._note_problem("phone", event.reason)
            case TtsError():
                self._note_problem("tts", f"{event.code}: {event.message}")
            case TtsClosed() if not event.expected:
                log.warning("call %s: TTS socket closed (code %s %s)", self.call_id, event.code, event.reason)
                self._tts_lost.set()
            case _:
                pass

    def _note_problem(self, side: str, reason: str) -> None:
        key = f"{side}: {reason.split(':')[0]}"
        self._problems[key] += 1
        if self._problems[key] == 1:
            log.warning("call %s: ignored bad input from the %s side: %s", self.call_id, side, reason)

    # ----------------------------------------------------------------- readers

    async def _read_phone(self) -> None:
        ws, codec, put = self.websocket, self.codec, self.put
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    put(CallEnded(self.clock(), "hangup"))
                    return
                raw = message.get("text")
                events = codec.decode(raw if raw is not None else message.get("bytes") or b"", self.clock())
                for event in events:
                    put(event)
                    if isinstance(event, CallEnded):
                        return
        except (WebSocketDisconnect, RuntimeError, OSError):
            put(CallEnded(self.clock(), "dropped"))

    async def _keep_tts_connected(self) -> None:
        """Connect at call start, and again after a drop, with backoff; give up on a bad key."""
        failures = 0
        while True:
            try:
                await self.tts.connect(self.put)
                failures = 0
            except TtsConnectError as exc:
                failures += 1
                if exc.permanent or failures > len(RECONNECT_DELAYS_S):
                    log.error("call %s: giving up on the TTS after %d tries: %s", self.call_id, failures, exc)
                    return
                log.warning("call %s: %s; retrying", self.call_id, exc)
                await asyncio.sleep(RECONNECT_DELAYS_S[failures - 1])
                continue
            self._tts_lost.clear()
            await self._tts_lost.wait()
            await self.tts.aclose()

    async def _run_agent(self, turn: Turn) -> None:
        put, number = self.put, turn.number
        try:
            async for text in self.agent.reply(turn):
                if text:
                    put(AgentText(self.clock(), number, text))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("call %s: the agent failed on turn %d", self.call_id, number)
            put(AgentFailed(self.clock(), number, f"{type(exc).__name__}: {exc}"))
            return
        put(AgentDone(self.clock(), number))

    # ----------------------------------------------------------------- actions

    async def _execute(self, action: Action) -> None:
        match action:
            case SendMedia() | SendMark() | ClearPlayback():
                await self._to_phone(self.codec.encode(action))
            case OpenContext() | SendText() | KeepAlive() | CloseContext():
                await self.tts.send(action)
            case StartTurn():
                await self._cancel_agent()
                turn = Turn(action.turn, action.utterance, action.digits)
                self._agent_task = asyncio.create_task(self._run_agent(turn), name=f"agent-turn-{action.turn}")
            case CancelTurn():
                await self._cancel_agent()
            case ReplyHeard():
                self.agent.heard(action.turn, action.text, action.interrupted)
            case EndCall():
                await self._close_phone(1000)
            case _:
                assert_never(action)

    async def _to_phone(self, text: str) -> None:
        if not self._phone_open:
            return
        try:
            await self.websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._phone_open = False
            self.put(CallEnded(self.clock(), "dropped"))

    async def _cancel_agent(self) -> None:
        task, self._agent_task = self._agent_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _close_phone(self, code: int) -> None:
        if self._phone_open:
            self._phone_open = False
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.websocket.close(code)

    async def _teardown(self, reader: asyncio.Task[None]) -> None:
        """Nothing of this call may outlive it: TTS said goodbye, every task awaited."""
        await self._cancel_agent()
        tasks = [t for t in (self._tts_task, reader) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.tts.aclose()
        await self._close_phone(1000)
        snap = self.call.snapshot
        latency = (
            f"{(snap.first_audio_at - snap.started_at) * 1000:.0f} ms"
            if snap.first_audio_at is not None and snap.started_at is not None
            else "n/a"
        )
        log.info(
            "call %s ended: %d turns, %d barge-ins, greeting latency %s, %d late TTS chunks dropped, %d bad messages",
            self.call_id, snap.turn + 1, snap.barge_ins, latency, snap.dropped_audio_chunks, snap.malformed_messages,
        )
