"""The asyncio shell of one call: it moves bytes and time in and out of the core, nothing else.

Every input (the phone socket, the TTS socket, the agent's stream, the timer) becomes an event,
and events reach ``Call.handle`` strictly one at a time, in arrival order, each one's actions
executed before the next event is handled, so the core is never entered concurrently. Time
reaches the core as a single timer per call (``loop.call_at`` for the core's next deadline),
never a task per frame.

The core decides the rest, timeouts included (the carrier's ``start``, the agent's silence,
when to connect the TTS). Failures are told apart by who caused them: a failed phone read is the
caller dropping, a failed TTS send the TTS socket failing (reported as `TtsClosed`), and anything
else that raises (the core, a codec) a bug: logged with its traceback at ERROR, the call ended
with reason "error".

Caller audio is 50 messages a second per call for the whole call, so its path is kept short:
when nothing is queued or in progress, an event goes to the core at once, where it comes from,
instead of waking the call's loop for it (`put` → `_step_now`). On the bridge's own WebSocket
protocol (``bridge.server.wsframes``) a phone message is handed over inside the server's read of
the socket (`DirectFeed`), so no task wakes for a frame of caller audio; and what the core then
sends the phone (media, marks, a barge-in's ``clear``) is written at once while the socket takes
it, so a worker behind its calls does not hold a ``clear`` or a refill for another turn of its
loop. Any other action (the TTS, the agent, the end), and all after it, is executed by the
call's loop, which takes every event after them. On uvicorn's own protocols the phone reader
task takes each message from ``receive`` the same way, and the loop sends. Events that find the
core busy wait in the inbox for the loop. What each saves is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import assert_never

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.agents.base import Agent, AgentError, HangUp, Transfer, Turn
from bridge.agents.stt.base import StreamingTranscriber
from bridge.agents.tools import TransferPolicy
from bridge.carriers.base import CarrierCodec, Outbound, PhoneMessage, frames
from bridge.carriers.twilio.codec import TwilioCodec
from bridge.core.actions import (
    AbandonTurn,
    Action,
    CancelTurn,
    ClearPlayback,
    CloseContext,
    ConfirmTurn,
    ConnectTts,
    EndCall,
    JudgeTurn,
    KeepAlive,
    OpenContext,
    ReplyHeard,
    SendMark,
    SendMedia,
    SendText,
    StartTurn,
)
from bridge.core.call import Call, CallSettings, CallSnapshot
from bridge.core.events import (
    AgentControl,
    AgentDone,
    AgentFailed,
    AgentText,
    CallEnded,
    CallerAudio,
    CallStarted,
    Event,
    PhoneConnected,
    TelephonyMalformed,
    Tick,
    TtsAudio,
    TtsClosed,
    TtsError,
    VoicemailDetected,
    WindDown,
)
from bridge.server import metrics
from bridge.server.asgi import CHANNEL
from bridge.server.listening import Listening
from bridge.server.warm import CallTts
from bridge.server.wsframes import DIRECT, DirectFeed
from bridge.tts import supervisor
from bridge.tts.base import TtsClient
from bridge.tts.supervisor import TtsSupervisor
from bridge.turn import HeuristicJudge, TurnJudge

__all__ = ["CallSession"]

log = logging.getLogger("bridge.server.session")

MAX_BACKLOG = 200
"""Events waiting for the core beyond which the phone reader stops reading: a flood then waits in
the socket's buffers (uvicorn stops reading from TCP), not in this call's memory."""

YIELD_EVERY = 16
"""Phone messages handled in a row before the reader lets other calls run: uvicorn's ``receive``
returns without suspending while it holds messages, so a flood would otherwise starve the loop.
Sixteen frames are a few milliseconds of work; a reader that is keeping up suspends in ``receive``
at every message anyway, so each forced yield is a task switch the loop pays for nothing. (The
direct feed keeps the same share per read: ``bridge.server.wsframes.PER_TURN``.)"""

IN_A_ROW = 8
"""Inbox events worked off in a row before the call's loop lets other calls run (a backlog)."""


class CallSession:
    """Runs one call from the media socket's accept to its last byte."""

    def __init__(
        self,
        websocket: WebSocket,
        *,
        settings: CallSettings,
        tts: TtsClient,
        agent: Agent,
        start_timeout_s: float | None = None,
        max_message_bytes: int = 64 * 1024,
        on_event: Callable[[Event], None] | None = None,
        codec: CarrierCodec | None = None,
        judge: TurnJudge | None = None,
        stt: StreamingTranscriber | None = None,
        transfers: TransferPolicy | None = None,
        on_outcome: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``start_timeout_s``, when given, replaces ``settings.start_timeout_s`` (the core keeps the time).
        ``transfers`` is the allow-list a `Transfer` is checked against (None: no transfers at all);
        ``on_outcome(call_sid, kind, to)`` is told how the bridge ended the call (``/twilio/after`` asks)."""
        self.websocket = websocket
        # The server's own receive and send, used once the socket is accepted (bridge.server.asgi);
        # a stand-in WebSocket without them (tests) is used through its methods.
        scope = getattr(websocket, "scope", {})
        channel = scope.get(CHANNEL)
        self._receive: Callable[[], Awaitable[Message]] = channel[0] if channel else websocket.receive
        self._send: Callable[[Message], Awaitable[None]] | None = channel[1] if channel else None
        # The server's direct delivery of phone messages, where it offers it (bridge.server.wsframes).
        feed = (scope.get("extensions") or {}).get(DIRECT) if channel else None
        self._feed: DirectFeed | None = feed if isinstance(feed, DirectFeed) else None
        self._due: list[Action] | None = None  # a direct step's actions, for the loop to execute
        self._held = False  # the direct feed was told to hold off: a backlog
        self._heard_all = False  # the phone's messages are over for this call (ended, or a bug)
        if start_timeout_s is not None:
            settings = dataclasses.replace(settings, start_timeout_s=start_timeout_s)
        self.call = Call(settings)
        self._aec_budget = settings.aec_budget
        self.codec = codec if codec is not None else TwilioCodec(max_message_bytes=max_message_bytes)
        self.tts = tts
        self.agent = agent
        self.on_event = on_event
        self.transfers = transfers or TransferPolicy()
        self.on_outcome = on_outcome
        self.call_sid = ""
        self.outcome: tuple[str, str, float] | None = None  # (kind, to, when) if the bridge ended the call
        self.call_id = "?"
        self.end_reason = ""  # why the call ended: the phone's reason, the core's, or "error" (a bug)
        self._loop = asyncio.get_running_loop()
        self._inbox: deque[Event] = deque()
        self._wakeup: asyncio.Future[None] | None = None  # set while the loop waits for an event
        self._busy = False  # an event's actions are being executed
        self._failed = False  # a bug was reported: the call ends
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._agent_task: asyncio.Task[None] | None = None
        self._tts_task: asyncio.Task[None] | None = None
        self.tts_supervisor = TtsSupervisor(tts, self.put, clock=self.clock, name=lambda: self.call_id,
                                            delays=supervisor.RECONNECT_DELAYS_S)
        self.peak_backlog = 0  # most events ever waiting in the inbox: a flood must not grow it
        self._problems: Counter[str] = Counter()
        self._phone_open = True
        self._turn_began: tuple[float, bool] | None = None  # (when, is the greeting) until its first audio
        # Observer hooks (call records): each action the core returns, and the call's end. Like on_event,
        # they run inline and must not raise or block.
        self.on_action: Callable[[Action], None] | None = None
        self.on_end: Callable[[CallSnapshot], None] | None = None
        self._opened: dict[str, float] = {}  # contexts opened, until their first audio
        self.rate = settings.audio.rate  # the call's audio: the caller's, as the judge and speech-to-text get it
        self.listening = Listening(judge or HeuristicJudge(), stt, self.put, self.clock, lambda: self.call_id,
                                   rate=self.rate)

    def clock(self) -> float:
        return self._loop.time()

    def put(self, event: Event) -> None:
        """An event for the core: handled at once where it comes from when the core is free and
        nothing waits before it (`_step_now`), else queued for the call's loop, in order."""
        if self._inbox or self._busy or self.call.ended or self._failed:
            self._queue(event)
        else:
            self._step_now(event)

    def _queue(self, event: Event) -> None:
        self._inbox.append(event)
        if len(self._inbox) > self.peak_backlog:
            self.peak_backlog = len(self._inbox)
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def end(self, reason: str = "shutdown") -> None:
        """End the call from outside (server shutdown): as a hang-up would, so teardown is the same."""
        self.put(CallEnded(self.clock(), reason))

    def wind_down(self, text: str, within_s: float) -> None:
        """The server is going away: finish what is being said, say ``text``, end within ``within_s``."""
        now = self.clock()
        self.put(WindDown(now, text, now + within_s))

    def voicemail(self) -> None:
        """The carrier's machine detection says an answering machine took this call."""
        self.put(VoicemailDetected(self.clock()))

    async def run(self) -> None:
        self.put(PhoneConnected(self.clock()))  # first in the inbox: the core times the carrier's 'start' from it
        reader = asyncio.create_task(self._read_phone(), name="phone-reader")
        self._tts_task = asyncio.create_task(self.tts_supervisor.run(), name="tts-supervisor")
        self.listening.start()
        metrics.call_started()
        try:
            await self._loop_until_ended()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            try:
                await self._teardown(reader)
            finally:
                metrics.call_ended(self.call.snapshot, self.tts_supervisor.connects)
                if self.on_end is not None:
                    self.on_end(self.call.snapshot)

    async def _loop_until_ended(self) -> None:
        inbox = self._inbox
        in_a_row = 0
        while True:
            due = self._due
            if due is not None:  # an event handled where it came from: its actions, before any other
                self._due = None  # (an `EndCall` among them too: the core has ended the call already)
                await self._finish(due)
                self._resume_feed()
                continue
            if self.call.ended or self._failed:
                return
            if not inbox or self._busy:  # the phone reader may be in the core, sending
                in_a_row = 0
                self._wakeup = self._loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
                continue
            await self._step(inbox.popleft())
            self._resume_feed()
            in_a_row += 1
            if inbox and in_a_row >= IN_A_ROW:
                in_a_row = 0
                await asyncio.sleep(0)  # a backlog is worked off in turns with every other call

    async def _step(self, event: Event) -> None:
        """Handle one event and execute its actions."""
        self._busy = True
        try:
            actions = self._handle(event)
        except Exception:
            self._report_bug(f"handling {type(event).__name__}")
            self._busy = False
            return
        await self._finish(actions)

    def _step_now(self, event: Event) -> None:
        """`_step` where the event came from (a phone message as it is read, a timer, a TTS or
        agent task), without waking the call's loop: what goes to the phone is written at once
        when the socket takes it (`_send_now`); any other action, and all after it, is left to
        the loop (`_due`), which stays busy until it has executed them, so the next event still
        waits for them."""
        self._busy = True
        try:
            actions = self._handle(event)
            done = self._send_now(actions) if actions else 0
            if done < len(actions):
                self._due = actions[done:]
                self._wake()
                return
            if not self.call.ended:
                self._arm_timer(self.call.next_deadline())
        except Exception:
            self._report_bug(f"handling {type(event).__name__}")
        self._busy = False
        if self._inbox or self.call.ended or self._failed:
            self._wake()  # something came in meanwhile, or the call is over

    def _send_now(self, actions: list[Action]) -> int:
        """Execute the leading actions that only write to the phone, at once, on the server's
        direct feed (`DirectFeed.send`), as `_execute` would; how many. None while the feed is
        not `ready` (no feed, a full transport buffer, a closing socket): the loop sends them."""
        feed = self._feed
        if feed is None or not feed.ready():
            return 0
        for done, action in enumerate(actions):
            if not isinstance(action, PhoneMessage):
                return done
            out = self._for_phone(action)
            if self._phone_open:
                for frame in frames(out):
                    feed.send(frame)
        return len(actions)

    def _handle(self, event: Event) -> list[Action]:
        """The core's part of a step, and the observers': the only way into the core."""
        if self.on_event is not None:
            self.on_event(event)
        self._observe(event)
        actions = self.call.handle(event)
        if self.on_action is not None:
            for action in actions:
                self.on_action(action)
        return actions

    async def _finish(self, actions: list[Action]) -> None:
        """Execute a step's actions (the core is busy until then), then time its next deadline."""
        self._busy = True
        doing = "timing the next deadline"
        try:
            for action in actions:
                doing = f"executing {type(action).__name__}"
                await self._execute(action)
            if not self.call.ended:
                self._arm_timer(self.call.next_deadline())
        except Exception:
            self._report_bug(doing)
        finally:
            self._busy = False

    def _report_bug(self, doing: str) -> None:
        """Something of ours raised (call only from an ``except`` block): a bug, not the caller
        hanging up nor a peer's fault, so it is logged loudly, with its traceback, and the call ends."""
        log.exception("call %s: bug in the bridge while %s; ending the call", self.call_id, doing)
        self.end_reason = "error"
        self._failed = True
        self._wake()

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
        now = self.clock()
        if self._timer_at is not None:  # a late timer means late audio for the caller
            late = now - self._timer_at
            metrics.frame_lateness(late)
            if self._aec_budget is not None:  # and a worker that should take on no more echo cancellers
                self._aec_budget.late(now, late)
        self._timer = None
        self._timer_at = None
        self.put(Tick(now))

    def _observe(self, event: Event) -> None:
        """Log what a person running the bridge wants to know, once per kind of problem."""
        match event:
            case CallerAudio():
                self.listening.feed(event.pcm)
            case TtsAudio() if event.context_id in self._opened:
                metrics.turn_stage("tts_first_audio", event.at - self._opened.pop(event.context_id))
            case CallStarted():
                self.call_id, self.call_sid = event.call_id or event.stream_id, event.call_id
                if isinstance(self.tts, CallTts):  # the stream names its call: the TTS socket warmed for it, if any
                    self.tts.started(event.call_id)
                log.info("call %s started", self.call_id)
            case CallEnded():
                self.end_reason = self.end_reason or event.reason
            case TelephonyMalformed():
                self._note_problem("phone", event.reason)
            case TtsError(context_id=str()):
                self._note_problem("tts", f"{event.code}: {event.message}")
            case TtsError() | TtsClosed():
                self.tts_supervisor.observe(event)  # it logs the fault once, with how it ended
            case _:
                pass

    def _note_problem(self, side: str, reason: str) -> None:
        key = f"{side}: {reason.split(':')[0]}"
        self._problems[key] += 1
        if self._problems[key] == 1:
            log.warning("call %s: ignored bad input from the %s side: %s", self.call_id, side, reason)

    # ----------------------------------------------------------------- readers

    async def _read_phone(self) -> None:
        receive, put, inbox = self._receive, self.put, self._inbox
        handled = 0
        if self._feed is not None:  # from here on the phone's messages come to `_take` as they are read
            self._feed.attach(self._take)
        try:
            while True:
                try:
                    message = await receive()
                except (WebSocketDisconnect, RuntimeError, OSError):
                    put(CallEnded(self.clock(), "dropped"))  # the line is gone: only a read can say so
                    return
                if message["type"] == "websocket.disconnect":
                    put(CallEnded(self.clock(), "hangup"))
                    return
                if not self._take(message):  # a backlog: reading waits until the loop has worked it off
                    while len(inbox) >= MAX_BACKLOG:
                        await asyncio.sleep(0.005)
                if self._heard_all:
                    return
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        except Exception:
            self._report_bug("reading the phone socket")

    def _take(self, message: Message) -> bool:
        """One phone message, as the server's direct feed hands it over while reading
        (`DirectFeed`) or the reader got it from ``receive``: decoded, each event to `put`.
        Answers whether to read on: not past a backlog (`MAX_BACKLOG`); the loop resumes the
        feed once it has worked the backlog off, and the reader waits for that itself."""
        if self._heard_all or self.call.ended or self._failed:
            return True  # the call is over: what still comes is dropped, as a reader no longer reading
        try:
            raw = message.get("text")
            for event in self.codec.decode(raw if raw is not None else message.get("bytes") or b"", self.clock()):
                self.put(event)
                if isinstance(event, CallEnded) or self._failed:
                    self._heard_all = True
                    return True
        except Exception:
            self._report_bug("reading the phone socket")
            self._heard_all = True
            return True
        if len(self._inbox) >= MAX_BACKLOG:
            self._held = True
            return False
        return True

    def _resume_feed(self) -> None:
        """Read the phone again once a backlog that held the direct feed is worked off."""
        if self._held and len(self._inbox) < MAX_BACKLOG // 2:
            self._held = False
            if self._feed is not None:
                self._feed.resume()

    async def _run_agent(self, turn: Turn) -> None:
        """Stream one reply into the inbox. An agent that raises has failed: the core then has the
        apology spoken. The core also times the agent's silences (``agent_timeout_s``): every
        piece, an empty one too, tells it the agent is alive. Cancelling this task (barge-in, or
        the core giving up on a silent agent) closes the agent's stream, and with it any HTTP
        request behind it."""
        put, number, began, first = self.put, turn.number, self.clock(), True
        stream = aiter(self.agent.reply(turn))
        try:
            async for text in stream:
                if isinstance(text, str):
                    if first and text:
                        first = False
                        metrics.turn_stage("agent_first_text", self.clock() - began)
                    put(AgentText(self.clock(), number, text))
                elif self._control(number, text):
                    break  # text after a control is not spoken
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._agent_failed(number, exc)
            return
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        put(AgentDone(self.clock(), number))

    def _control(self, number: int, control: object) -> bool:
        """Pass the agent's `HangUp` or `Transfer` to the core; a transfer off the allow-list is
        refused here too (whatever the agent), and the call goes on. True when one was passed."""
        match control:
            case HangUp():
                log.info("call %s: the agent ends the call after turn %d", self.call_id, number)
                self.put(AgentControl(self.clock(), number, "hangup", reason=control.reason[:120]))
                return True
            case Transfer():
                refusal = self.transfers.refusal(control.to)
                if refusal is not None:
                    log.warning("call %s: refused the agent's transfer to %s: not on the allow-list; the call goes on",
                                self.call_id, control.to[:20])
                    return False
                log.info("call %s: the agent transfers the call to %s after turn %d", self.call_id, control.to, number)
                self.put(AgentControl(self.clock(), number, "transfer", control.to))
                return True
        log.warning("call %s: the agent yielded %s, neither text nor a call control; ignored",
                    self.call_id, type(control).__name__)
        return False

    def _agent_failed(self, number: int, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        if isinstance(exc, TimeoutError | AgentError) or type(exc).__module__.startswith("httpx"):
            log.warning("call %s: the agent failed on turn %d (%s); the caller hears the apology",
                        self.call_id, number, reason)
        else:
            log.exception("call %s: the agent failed on turn %d", self.call_id, number)
        self.put(AgentFailed(self.clock(), number, reason))

    # ----------------------------------------------------------------- actions

    def _note_first_audio(self) -> None:
        """The turn's first audio goes out: how long the caller waited for it."""
        if self._turn_began is not None:
            began, greeting = self._turn_began
            self._turn_began = None
            metrics.reply_latency(self.clock() - began, greeting)
            metrics.turn_stage("playout_start", self.clock() - began)
            voice = getattr(self.tts, "current", None)
            if voice is not None:
                log.info("call %s: turn %d voiced by %s", self.call_id, self.call.snapshot.turn, voice)

    def _for_phone(self, action: PhoneMessage) -> Outbound:
        """What the phone is sent for ``action``, in the carrier's wire format (the loop awaits it,
        `_send_now` writes it at once). A `SendMedia` holds the frames of one refill, joined by the
        core's playout (``playback.message_ms``); a codec that needs other sizes cuts or holds
        them (Vonage, Exotel)."""
        if isinstance(action, SendMedia):
            self._note_first_audio()
        return self.codec.encode(action)

    async def _execute(self, action: Action) -> None:
        match action:
            case SendMedia() | SendMark() | ClearPlayback():
                await self._to_phone(self._for_phone(action))
            case OpenContext() | SendText() | KeepAlive() | CloseContext():
                if isinstance(action, OpenContext):
                    self._opened[action.context_id] = self.clock()
                await self._to_tts(action)
            case ConnectTts():
                self.tts_supervisor.start()
            case StartTurn():
                self._turn_began = (self.clock(), action.turn == 0)
                await self._cancel_agent()
                turn = Turn(action.turn, action.utterance, action.digits, self.listening.transcript(),
                            tentative=action.tentative, idle=action.idle, rate=self.rate)
                if not action.tentative:
                    self.listening.answered()
                self._agent_task = asyncio.create_task(self._run_agent(turn), name=f"agent-turn-{action.turn}")
            case JudgeTurn():
                self.listening.ask(action)
            case ConfirmTurn() | AbandonTurn():
                self._tell_agent(action)
            case CancelTurn():
                if action.reason:
                    log.warning("call %s: the agent failed on turn %d (%s); the caller hears the apology",
                                self.call_id, action.turn, action.reason)
                await self._cancel_agent()
            case ReplyHeard():
                try:
                    self.agent.heard(action.turn, action.text, action.interrupted)
                except Exception:
                    log.exception("call %s: the agent failed to take what the caller heard", self.call_id)
            case EndCall():
                if action.outcome:
                    self._record_outcome(action)
                else:
                    log.warning("call %s: media stream ended by the bridge: %s", self.call_id, action.reason)
                self.end_reason = self.end_reason or action.reason
                await self._close_phone(1000)
            case _:
                assert_never(action)

    def _tell_agent(self, action: ConfirmTurn | AbandonTurn) -> None:
        """A tentative turn is settled: the agent keeps it (and its words are answered) or forgets it."""
        if confirmed := isinstance(action, ConfirmTurn):
            metrics.turn_stage("end_of_turn", action.waited)
            self.listening.answered()
            self._turn_began = (self.clock(), False)  # the caller waits from here, not from the guess
        method = getattr(self.agent, "confirm" if confirmed else "abandon", None)
        if callable(method):
            try:
                method(action.turn)
            except Exception:
                log.exception("call %s: the agent failed to take a settled turn", self.call_id)
    def _record_outcome(self, action: EndCall) -> None:
        """The bridge ends the call on purpose: the carrier's after-stream request learns how."""
        began = self.call.started_at
        at = self.clock() - began if began is not None else 0.0
        self.outcome = (action.outcome, action.to, at)
        told = f"transfer to {action.to}" if action.outcome == "transfer" else "hang-up"
        log.info("call %s: ended by the bridge at %.1f s (%s): %s", self.call_id, at, told, action.reason)
        if self.on_outcome is not None and self.call_sid:
            try:
                self.on_outcome(self.call_sid, action.outcome, action.to)
            except Exception:
                log.exception("call %s: recording how the call ended failed", self.call_id)

    async def _to_phone(self, out: Outbound) -> None:
        if not self._phone_open:
            return
        send = self._send
        try:
            for frame in frames(out):  # a text frame, a binary one (Vonage), or none yet (Exotel)
                if send is not None:
                    await send({"type": "websocket.send", "text": frame} if isinstance(frame, str)
                               else {"type": "websocket.send", "bytes": frame})
                elif isinstance(frame, str):
                    await self.websocket.send_text(frame)
                else:
                    await self.websocket.send_bytes(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._phone_open = False
            self.put(CallEnded(self.clock(), "dropped"))

    async def _to_tts(self, action: OpenContext | SendText | KeepAlive | CloseContext) -> None:
        try:
            await self.tts.send(action)
        except OSError as exc:  # the network under the TTS socket failed: the TTS is lost, not the caller
            log.warning("call %s: sending to the TTS failed (%s); treating its socket as lost", self.call_id, exc)
            self.put(TtsClosed(self.clock(), None, f"send failed: {exc}"[:120]))

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
        await self.listening.aclose()
        close_agent = getattr(self.agent, "aclose", None)
        if close_agent is not None:
            with contextlib.suppress(Exception):
                await close_agent()
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
            "call %s ended (%s): %d turns, %d barge-ins, greeting latency %s, %d late TTS chunks dropped, "
            "%d bad messages, echo canceller on %d frames%s", self.call_id, self.end_reason or "?", snap.turn + 1,
            snap.barge_ins, latency, snap.dropped_audio_chunks, snap.malformed_messages, snap.aec_frames,
            f" (refused: {snap.aec_refused})" if snap.aec_refused else "",
        )
