"""The call: a state machine fed events with timestamps, answering with actions.

Everything that makes a phone call feel right lives here and nowhere else: when the caller
is talking, when the agent may speak, which TTS context is live, how far ahead of the caller
we push audio, what the caller has really heard. It never awaits, sleeps, reads a clock or
touches a socket, so every behaviour can be replayed in simulated time (see ``tests/``).

Vocabulary worth knowing:

* A *reply* is one agent turn being voiced: its text goes into one fresh TTS context.
* A context is *live* while its reply is; after a barge-in it is *retired*: the server still
  sends the audio of text it already held (``close_context`` is graceful) and we drop it.
* The carrier (Twilio) plays what we send in order; we keep its buffer ``lead_ms`` deep so a
  ``clear`` throws little away, and ``mark``s tell us how far playback really got.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from bridge.core.actions import (
    Action,
    CancelTurn,
    ClearPlayback,
    CloseContext,
    KeepAlive,
    OpenContext,
    ReplyHeard,
    SendMark,
    SendMedia,
    SendText,
    StartTurn,
)
from bridge.core.audio import PCM_FRAME_BYTES, Framer, pcm_to_ulaw
from bridge.core.bargein import BargeInConfig, Listener
from bridge.core.contexts import ContextTable
from bridge.core.echo import EchoConfig
from bridge.core.events import (
    AgentDone,
    AgentFailed,
    AgentText,
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    Event,
    MarkPlayed,
    TelephonyMalformed,
    Tick,
    TtsAudio,
    TtsClosed,
    TtsConnected,
    TtsError,
    TtsFinal,
)
from bridge.core.text import split_ready_text
from bridge.core.vad import SpeechConfirmed, SpeechDropped, SpeechEnded, SpeechStarted, VadConfig

__all__ = ["Call", "CallSettings", "CallSnapshot", "CallState"]

FRAME_S = 0.02
EPS = 1e-6  # deadlines are compared with this slack, so float rounding can't stall a timer
CHARS_PER_SECOND = 14.0  # speaking rate used to guess heard text when the TTS gives no alignment


class CallState(enum.Enum):
    CONNECTING = "connecting"  # socket up, no ``start`` yet
    LISTENING = "listening"  # no reply in progress
    THINKING = "thinking"  # a reply is wanted, none of its audio has gone out yet
    SPEAKING = "speaking"  # reply audio is out (or still playing at the carrier)
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CallSettings:
    vad: VadConfig = field(default_factory=VadConfig)
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    echo: EchoConfig = field(default_factory=EchoConfig)
    lead_ms: int = 200
    low_ms: int = 100
    mark_every_ms: int = 200
    max_contexts: int = 5
    keepalive_s: float = 10.0
    drain_timeout_s: float = 20.0
    first_audio_timeout_s: float = 10.0
    preroll_ms: int = 300
    max_utterance_s: float = 60.0
    apology: str = ""  # spoken when the agent fails or times out, so the caller never waits in silence
    turn_end_digit: str = ""  # a DTMF key that ends the caller's turn at once ("" = none)
    agent_timeout_s: float = 10.0  # the shell's limit on the agent's first text and gaps (bridge.server.session)


@dataclass(frozen=True, slots=True)
class CallSnapshot:
    state: CallState
    turn: int
    live_context: str | None
    contexts_in_use: int
    peak_contexts: int
    contexts_opened: int
    frames_sent: int
    dropped_audio_chunks: int
    dropped_audio_bytes: int
    barge_ins: int
    malformed_messages: int
    first_audio_at: float | None
    started_at: float | None
    reaction_times: tuple[float, ...]
    ended: bool


@dataclass(slots=True)
class _Mark:
    name: str
    turn: int
    frames: int
    cleared: bool = False


@dataclass(slots=True)
class _Reply:
    """One agent turn on its way to the caller."""

    turn: int
    context_id: str | None = None
    pending: str = ""  # agent text not yet cut into TTS pieces
    outbox: list[tuple[str, bool]] = field(default_factory=list)  # pieces waiting for a context
    unflushed: bool = False
    agent_done: bool = False
    done_at: float = 0.0
    got_audio: bool = False
    final: bool = False
    queue: deque[bytes] = field(default_factory=deque)
    framer: Framer = field(default_factory=lambda: Framer(PCM_FRAME_BYTES))
    frames_sent: int = 0
    frames_played: int = 0
    bytes_received: int = 0
    text_sent: str = ""
    chars: list[tuple[float, str]] = field(default_factory=list)  # (frame position, char)
    chars_voiced: int = 0
    paused_at: float | None = None  # soft barge-in: held since then, waiting to resume or give up
    sent: deque[bytes] = field(default_factory=deque)  # the last frames sent, to put back on a pause

    @property
    def finished(self) -> bool:
        """All audio there will ever be is out of our hands."""
        text_left = self.pending or self.outbox
        return self.agent_done and not text_left and not self.queue and (self.final or self.context_id is None)


class Call:
    """One phone call's logic. ``handle`` every event; honour ``next_deadline`` with a `Tick`."""

    def __init__(self, settings: CallSettings | None = None) -> None:
        self.settings = settings or CallSettings()
        s = self.settings
        self._listener = Listener(s.vad, s.barge_in, s.echo)
        self._keep_sent = s.lead_ms // 20 + 2  # frames that can be waiting at the carrier
        self._contexts = ContextTable(max_slots=s.max_contexts)
        self._lead = s.lead_ms / 1000
        self._low = s.low_ms / 1000
        self._mark_every = s.mark_every_ms / 1000
        self._state = CallState.CONNECTING
        self._turn = -1
        self._reply: _Reply | None = None
        self._tts_up = False
        self._play_end = 0.0
        self._last_mark_at = float("-inf")
        self._marks: deque[_Mark] = deque()
        self._preroll: deque[bytes] = deque()
        self._preroll_bytes = 0
        self._utterance: list[bytes] | None = None
        self._utterance_bytes = 0
        self._digits = ""
        self._started_at: float | None = None
        self._first_audio_at: float | None = None
        self._frames_sent = 0
        self._contexts_opened = 0
        self._dropped_chunks = 0
        self._dropped_bytes = 0
        self._barge_ins = 0
        self._malformed = 0
        self._reactions: list[float] = []

    # ----------------------------------------------------------------- public surface

    @property
    def state(self) -> CallState:
        if self._state in (CallState.CONNECTING, CallState.ENDED):
            return self._state
        reply = self._reply
        if reply is None:
            return CallState.LISTENING
        return CallState.SPEAKING if reply.frames_sent else CallState.THINKING

    @property
    def ended(self) -> bool:
        return self._state is CallState.ENDED

    @property
    def started_at(self) -> float | None:
        return self._started_at

    @property
    def snapshot(self) -> CallSnapshot:
        return CallSnapshot(
            state=self.state,
            turn=self._turn,
            live_context=self._reply.context_id if self._reply else None,
            contexts_in_use=self._contexts.slots_in_use,
            peak_contexts=self._contexts.peak_slots,
            contexts_opened=self._contexts_opened,
            frames_sent=self._frames_sent,
            dropped_audio_chunks=self._dropped_chunks,
            dropped_audio_bytes=self._dropped_bytes,
            barge_ins=self._barge_ins,
            malformed_messages=self._malformed,
            first_audio_at=self._first_audio_at,
            started_at=self._started_at,
            reaction_times=tuple(self._reactions),
            ended=self._state is CallState.ENDED,
        )

    def handle(self, event: Event) -> list[Action]:
        """Feed one event; return what to do now. Never raises for anything a peer sends."""
        if self._state is CallState.ENDED:
            return []
        out: list[Action] = []
        match event:
            case CallerAudio():
                self._on_caller_audio(event, out)
            case TtsAudio():
                self._on_tts_audio(event, out)
            case MarkPlayed():
                self._on_mark(event)
            case Tick():
                self._on_tick(event.at, out)
            case AgentText():
                self._on_agent_text(event, out)
            case AgentDone():
                self._on_agent_done(event.turn, event.at, out)
            case AgentFailed():
                self._on_agent_failed(event, out)
            case TtsFinal():
                self._on_tts_final(event, out)
            case TtsConnected():
                self._tts_up = True
                self._send_outbox(event.at, out)
            case TtsClosed():
                self._on_tts_lost(out)
            case TtsError():
                self._on_tts_error(event, out)
            case CallStarted():
                self._on_started(event, out)
            case DtmfReceived():
                self._on_dtmf(event, out)
            case TelephonyMalformed():
                self._malformed += 1
            case CallEnded():
                self._on_ended(event.at, out)
                return out
        self._service(event.at, out)
        return out

    def next_deadline(self) -> float | None:
        """The latest time the shell must send a `Tick` (None: nothing is waiting on time)."""
        if self._state is CallState.ENDED:
            return None
        s = self.settings
        times: list[float] = []
        reply = self._reply
        if reply is not None:
            if reply.paused_at is not None:
                times.append(reply.paused_at + s.barge_in.max_pause_ms / 1000)
            elif reply.queue:
                times.append(self._play_end - self._low)
            elif reply.finished:
                times.append(self._play_end)
            if reply.agent_done and reply.context_id and not reply.got_audio:
                times.append(reply.done_at + s.first_audio_timeout_s)
        contexts = self._contexts.next_deadline(s.keepalive_s, s.drain_timeout_s)
        if contexts is not None:
            times.append(contexts)
        return min(times, default=None)

    # ----------------------------------------------------------------- phone side

    def _on_started(self, event: CallStarted, out: list[Action]) -> None:
        if self._state is not CallState.CONNECTING:
            self._malformed += 1  # a second ``start``: keep the call as it is
            return
        self._state = CallState.LISTENING
        self._started_at = event.at
        self._start_turn(b"", out)  # the greeting

    def _on_caller_audio(self, event: CallerAudio, out: list[Action]) -> None:
        if self._state is CallState.CONNECTING:
            self._malformed += 1  # media before start; the codec normally catches it
            return
        self._remember(event.pcm)
        for change in self._listener.feed(event.pcm, event.at):
            match change:
                case SpeechStarted():
                    self._on_speech_started(change, out)
                case SpeechConfirmed() if self._reply is not None and self._reply.paused_at is not None:
                    self._barge_in(change, out)
                case SpeechDropped() if self._reply is not None and self._reply.paused_at is not None:
                    self._resume(self._reply)
                case SpeechEnded():
                    self._on_speech_ended(out)

    def _remember(self, pcm: bytes) -> None:
        """Keep recent audio, so an utterance starts at its onset, not at its detection."""
        if self._utterance is not None:
            if self._utterance_bytes < self.settings.max_utterance_s * 16000:
                self._utterance.append(pcm)
                self._utterance_bytes += len(pcm)
            return
        self._preroll.append(pcm)
        self._preroll_bytes += len(pcm)
        limit = (self.settings.preroll_ms + self.settings.vad.start_ms) * 16
        while self._preroll_bytes - len(self._preroll[0]) >= limit:
            self._preroll_bytes -= len(self._preroll.popleft())

    def _on_speech_started(self, change: SpeechStarted, out: list[Action]) -> None:
        self._utterance = list(self._preroll)
        self._utterance_bytes = self._preroll_bytes
        self._preroll.clear()
        self._preroll_bytes = 0
        if self._reply is not None:
            self._pause(self._reply, change.at, out)

    def _on_speech_ended(self, out: list[Action]) -> None:
        if self._utterance is None:
            return  # the turn-end key already ended this utterance's turn
        utterance = b"".join(self._utterance or ())
        self._utterance = None
        self._utterance_bytes = 0
        self._start_turn(utterance, out)

    def _pause(self, reply: _Reply, at: float, out: list[Action]) -> None:
        """Soft barge-in: silence the agent now, keeping every frame the caller has not heard.

        The frame in flight at the carrier finishes; the ones queued behind it go back to the head
        of the reply's queue, so a resume starts exactly where the caller stopped hearing.
        """
        reply.paused_at = at
        if reply.frames_sent:
            out.append(ClearPlayback())
            for mark in self._marks:
                mark.cleared = True
        unstarted = min(int(max(0.0, self._play_end - at) / FRAME_S + EPS), len(reply.sent))
        for _ in range(unstarted):
            reply.queue.appendleft(reply.sent.pop())
        reply.frames_sent -= unstarted
        self._play_end = at
        self._listener.cleared(at)

    def _resume(self, reply: _Reply) -> None:
        """It was a cough, a click, an "mhm": the reply goes on from where the caller left it."""
        reply.paused_at = None
        self._listener.discard()
        self._utterance = None
        self._utterance_bytes = 0

    def _barge_in(self, change: SpeechConfirmed, out: list[Action]) -> None:
        """The caller really is talking: the paused reply is over; nothing more of it may play."""
        reply = self._reply
        assert reply is not None and reply.paused_at is not None
        self._barge_ins += 1
        self._reactions.append(reply.paused_at - change.onset)
        heard = self._heard_frames(reply, change.at)
        self._retire(reply, change.at, out)
        out.append(ReplyHeard(reply.turn, self._heard_text(reply, heard), interrupted=True))

    def _retire(self, reply: _Reply, at: float, out: list[Action]) -> None:
        if not reply.agent_done:
            out.append(CancelTurn(reply.turn))
        if reply.context_id is not None and self._contexts.close(reply.context_id, at):
            out.append(CloseContext(reply.context_id))
        self._reply = None

    def _on_mark(self, event: MarkPlayed) -> None:
        while self._marks:
            mark = self._marks.popleft()
            if mark.name == event.name:
                reply = self._reply
                if not mark.cleared and reply is not None and reply.turn == mark.turn:
                    reply.frames_played = max(reply.frames_played, mark.frames)
                return

    # ----------------------------------------------------------------- agent side

    def _start_turn(self, utterance: bytes, out: list[Action]) -> None:
        self._turn += 1
        self._reply = _Reply(turn=self._turn)
        out.append(StartTurn(self._turn, utterance, self._digits))
        self._digits = ""

    def _on_agent_text(self, event: AgentText, out: list[Action]) -> None:
        reply = self._reply
        if reply is None or reply.turn != event.turn or reply.agent_done:
            return  # a cancelled turn still streaming: ignore
        reply.pending += event.text
        pieces, reply.pending = split_ready_text(reply.pending, final=False)
        reply.outbox.extend(pieces)
        self._send_outbox(event.at, out)

    def _on_agent_done(self, turn: int, at: float, out: list[Action]) -> None:
        reply = self._reply
        if reply is None or reply.turn != turn or reply.agent_done:
            return
        reply.agent_done = True
        reply.done_at = at
        pieces, reply.pending = split_ready_text(reply.pending, final=True)
        reply.outbox.extend(pieces)
        if reply.outbox and not reply.outbox[-1][1]:
            reply.outbox[-1] = (reply.outbox[-1][0], True)
        elif not reply.outbox and reply.unflushed:
            reply.outbox.append(("", True))
        self._send_outbox(at, out)

    # ----------------------------------------------------------------- keys and agent failures

    def _on_dtmf(self, event: DtmfReceived, out: list[Action]) -> None:
        """Keys go to the agent with the next turn; the turn-end key starts that turn now."""
        if self._state is CallState.CONNECTING:
            self._malformed += 1
            return
        self._digits += event.digit
        if not self.settings.turn_end_digit or event.digit != self.settings.turn_end_digit:
            return
        if self._reply is not None:
            self._interrupt_by_key(self._reply, event.at, out)
        utterance = b"".join(self._utterance or ())  # what the caller said before the key, if anything
        self._utterance = None
        self._utterance_bytes = 0
        self._start_turn(utterance, out)

    def _interrupt_by_key(self, reply: _Reply, at: float, out: list[Action]) -> None:
        """A key pressed over the agent stops it as speech would (IVR habit), without counting a barge-in."""
        if reply.frames_sent:
            out.append(ClearPlayback())
            for mark in self._marks:
                mark.cleared = True
        heard = self._heard_frames(reply, at)
        self._retire(reply, at, out)
        self._play_end = at
        out.append(ReplyHeard(reply.turn, self._heard_text(reply, heard), interrupted=True))

    def _on_agent_failed(self, event: AgentFailed, out: list[Action]) -> None:
        """The caller hears the apology (after whatever the agent did say) instead of silence."""
        reply = self._reply
        if reply is None or reply.turn != event.turn or reply.agent_done:
            return
        apology = self.settings.apology.strip()
        if apology:
            reply.pending = f"{reply.pending} {apology}" if reply.pending.strip() else apology
        self._on_agent_done(event.turn, event.at, out)

    # ----------------------------------------------------------------- TTS side

    def _send_outbox(self, at: float, out: list[Action]) -> None:
        reply = self._reply
        if reply is None or not reply.outbox or not self._tts_up:
            return
        if reply.context_id is None:
            if not self._contexts.can_open():
                return  # wait for a draining context's isFinal
            reply.context_id = self._contexts.open(at)
            self._contexts_opened += 1
            out.append(OpenContext(reply.context_id))
        for text, flush in reply.outbox:
            out.append(SendText(reply.context_id, text, flush))
            reply.text_sent += text
            reply.unflushed = not flush
        reply.outbox.clear()
        self._contexts.note_sent(reply.context_id, at)
        self._maybe_close(reply, at, out)

    def _maybe_close(self, reply: _Reply, at: float, out: list[Action]) -> None:
        """Close a finished reply's context, but only once its first audio is here.

        Closing before the server has started on the text can silently drop the whole reply.
        """
        if (
            reply.agent_done
            and reply.got_audio
            and not reply.outbox
            and not reply.pending
            and reply.context_id is not None
            and self._contexts.close(reply.context_id, at)
        ):
            out.append(CloseContext(reply.context_id))

    def _on_tts_audio(self, event: TtsAudio, out: list[Action]) -> None:
        reply = self._reply
        if reply is None or event.context_id != reply.context_id:
            self._dropped_chunks += 1
            self._dropped_bytes += len(event.pcm)
            return
        if event.alignment is not None:
            base = reply.bytes_received / PCM_FRAME_BYTES
            for i, char in enumerate(event.alignment.chars):
                start = event.alignment.start_ms[i] if i < len(event.alignment.start_ms) else 0
                reply.chars.append((base + start / 20, char))
            reply.chars_voiced += len(event.alignment.chars)
        reply.bytes_received += len(event.pcm)
        reply.queue.extend(reply.framer.push(event.pcm))
        if not reply.got_audio:
            reply.got_audio = True
            self._maybe_close(reply, event.at, out)

    def _on_tts_final(self, event: TtsFinal, out: list[Action]) -> None:
        self._contexts.final(event.context_id)
        reply = self._reply
        if reply is not None and event.context_id == reply.context_id:
            reply.final = True
            tail = reply.framer.flush()
            if tail is not None:
                reply.queue.append(tail)
        self._contexts.forget_final()
        self._send_outbox(event.at, out)  # a slot may have freed up for a waiting reply

    def _on_tts_error(self, event: TtsError, out: list[Action]) -> None:
        if event.context_id is None:
            return  # socket-level: a close follows, handled as TtsClosed
        self._on_tts_final(TtsFinal(event.at, event.context_id), out)

    def _on_tts_lost(self, out: list[Action]) -> None:
        """The socket is gone: every context with it. Re-voice what the caller has not got."""
        self._tts_up = False
        self._contexts.lose_all()
        self._contexts.forget_final()
        reply = self._reply
        if reply is None or reply.context_id is None or reply.final:
            return
        voiced = self._voiced_prefix(reply)
        unvoiced = reply.text_sent[voiced:]
        reply.text_sent = reply.text_sent[:voiced]
        reply.context_id = None
        reply.got_audio = False
        tail = reply.framer.flush()
        if tail is not None:
            reply.queue.append(tail)
        if unvoiced.strip():
            reply.outbox.insert(0, (unvoiced.lstrip(), True))

    def _voiced_prefix(self, reply: _Reply) -> int:
        """How much of the text sent already came back as audio (alignment, else a guess)."""
        guess = int(reply.bytes_received / 16000 * CHARS_PER_SECOND)
        voiced = min(reply.chars_voiced if reply.chars else guess, len(reply.text_sent))
        cut = reply.text_sent.rfind(" ", 0, voiced + 1)
        return cut + 1 if cut >= 0 else 0

    # ----------------------------------------------------------------- time

    def _on_tick(self, at: float, out: list[Action]) -> None:
        s = self.settings
        for context_id in self._contexts.drain_expired(at, s.drain_timeout_s):
            self._on_tts_final(TtsFinal(at, context_id), out)
        reply = self._reply
        if (
            reply is not None
            and reply.agent_done
            and reply.context_id is not None
            and not reply.got_audio
            and at - reply.done_at >= s.first_audio_timeout_s - EPS
        ):
            # The TTS never voiced this reply; give its slot back and move on.
            if self._contexts.close(reply.context_id, at):
                out.append(CloseContext(reply.context_id))
            reply.final = True
        paused_at = reply.paused_at if reply is not None else None
        if reply is not None and paused_at is not None and at >= paused_at + s.barge_in.max_pause_ms / 1000 - EPS:
            self._resume(reply)  # no caller audio came to settle the pause
        for context_id in self._contexts.keepalive_due(at, s.keepalive_s):
            out.append(KeepAlive(context_id))
            self._contexts.note_sent(context_id, at)

    def _service(self, at: float, out: list[Action]) -> None:
        """After every event: feed the carrier, and notice a reply that has fully played."""
        reply = self._reply
        if reply is None:
            return
        if reply.queue:
            self._pump(reply, at, out)
        if reply.finished and at >= self._play_end - EPS:
            out.append(ReplyHeard(reply.turn, reply.text_sent.strip(), interrupted=False))
            self._reply = None

    def _pump(self, reply: _Reply, now: float, out: list[Action]) -> None:
        """Keep the carrier between ``low_ms`` and ``lead_ms`` ahead of real time (not while paused)."""
        if reply.paused_at is not None:
            return
        if self._play_end < now:
            self._play_end = now  # its buffer ran dry: playback restarts now
        elif self._play_end - now > self._low + EPS:
            return
        sent = 0
        while reply.queue and self._play_end - now < self._lead - EPS:
            frame = reply.queue.popleft()
            out.append(SendMedia(pcm_to_ulaw(frame)))
            self._listener.played(frame, self._play_end)  # the echo guard's reference: as it plays
            reply.sent.append(frame)
            self._play_end += FRAME_S
            sent += 1
        while len(reply.sent) > self._keep_sent:
            reply.sent.popleft()
        if not sent:
            return
        if self._first_audio_at is None:
            self._first_audio_at = now
        reply.frames_sent += sent
        self._frames_sent += sent
        if now - self._last_mark_at >= self._mark_every or not reply.queue:
            name = f"{reply.turn}:{reply.frames_sent}"
            out.append(SendMark(name))
            self._marks.append(_Mark(name, reply.turn, reply.frames_sent))
            self._last_mark_at = now

    # ----------------------------------------------------------------- what was heard

    def _heard_frames(self, reply: _Reply, now: float) -> int:
        unplayed = max(0.0, self._play_end - now) / FRAME_S
        return max(reply.frames_played, reply.frames_sent - int(unplayed + 0.999))

    def _heard_text(self, reply: _Reply, frames: int) -> str:
        if reply.chars:
            text = "".join(char for position, char in reply.chars if position < frames)
        else:
            text = reply.text_sent[: int(frames * FRAME_S * CHARS_PER_SECOND)]
        if text and len(text) < len(reply.text_sent) and not text.endswith(" "):
            text = text[: text.rfind(" ") + 1]  # a half-heard word was not heard
        return text.strip()

    # ----------------------------------------------------------------- the end

    def _on_ended(self, at: float, out: list[Action]) -> None:
        reply = self._reply
        if reply is not None:
            self._retire(reply, at, out)
        for context_id in self._contexts.open_ids():
            self._contexts.close(context_id, at)
            out.append(CloseContext(context_id))
        self._state = CallState.ENDED
