"""The call: a state machine fed events with timestamps, answering with actions.

Everything that makes a phone call feel right is decided in the core and nowhere else: when the caller
is talking, when the agent may speak, which TTS context is live, how far ahead of the caller we push
audio, what the caller has really heard. It never awaits, sleeps, reads a clock or touches a socket, so
every behaviour can be replayed in simulated time (see ``tests/``). This module only dispatches: each
event goes to the part that owns what it is about, and the parts are where the rules live.

* ``bridge.core.reply``: a reply's lifecycle, as one state enum and one transition table;
* ``bridge.core.playout``: pacing the carrier, marks, and what the caller heard;
* ``bridge.core.voice`` and ``contexts``: the TTS contexts, their slots and keep-alives;
* ``bridge.core.bargein`` (with ``vad``, ``echo``, ``noise``): is the caller talking;
* ``bridge.core.utterance``: the caller's words; ``turns`` and ``turntaking``: when their turn is over;
* ``bridge.core.deadlines``: every timer, computed in one place (`Call.deadlines`);
* ``bridge.core.control``: the call's decisions about itself (hang up, transfer, idle caller,
  voicemail, the drain's goodbye), hooked in here in a few marked places.

Vocabulary worth knowing: a *reply* is one agent turn being voiced, in one fresh TTS context. A context is
*live* while its reply is; after a barge-in it is *retired*: the server still sends the audio of text it
already held (``close_context`` is graceful) and we drop it.
"""

from __future__ import annotations

from bridge.core.actions import Action, CancelTurn, ConnectTts, EndCall
from bridge.core.aec import EchoCanceller
from bridge.core.bargein import Listener
from bridge.core.control import CallControlMixin, Control
from bridge.core.deadlines import Timer, is_due, soonest
from bridge.core.events import (
    AgentControl,
    AgentDone,
    AgentFailed,
    AgentText,
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    Event,
    MarkPlayed,
    PhoneConnected,
    TelephonyMalformed,
    Tick,
    TtsAudio,
    TtsClosed,
    TtsConnected,
    TtsError,
    TtsFinal,
    TurnVerdict,
    VoicemailDetected,
    WindDown,
)
from bridge.core.playout import Playout
from bridge.core.reply import Input, Reply, ReplyState
from bridge.core.terms import CallSettings, CallSnapshot, CallState
from bridge.core.turntaking import TurnTaking
from bridge.core.utterance import Recorder
from bridge.core.vad import SpeechConfirmed, SpeechDropped, SpeechEnded, SpeechPaused, SpeechResumed, SpeechStarted
from bridge.core.voice import Voice

__all__ = ["Call", "CallSettings", "CallSnapshot", "CallState"]

_TIMERS = tuple(Timer)
_NONE: tuple[None, ...] = (None,) * len(_TIMERS)


class Call(TurnTaking, CallControlMixin):
    """One phone call's logic. ``handle`` every event; honour ``next_deadline`` with a `Tick`."""

    def __init__(self, settings: CallSettings | None = None) -> None:
        self.settings = settings or CallSettings()
        s = self.settings
        self._listener = Listener(s.vad, s.barge_in, s.echo, rate=s.audio.rate, pause_ms=self._init_turns(s))
        self._aec = EchoCanceller(s.aec, s.audio.rate, s.audio.frame_samples, budget=s.aec_budget)
        self._playout = Playout(s, echo=self._aec.behind(self._listener))
        self._voice = Voice(s.max_contexts, s.keepalive_s, s.drain_timeout_s)
        self._recorder = Recorder(s.audio, s.preroll_ms + s.vad.start_ms, s.max_utterance_s)
        self._max_pause = s.barge_in.max_pause_ms / 1000
        self._state = CallState.CONNECTING
        self._connected_at: float | None = None
        self._started_at: float | None = None
        self._turn = -1
        self._reply: Reply | None = None
        self._digits = ""
        self._dropped_chunks = self._dropped_bytes = 0
        self._barge_ins = self._malformed = 0
        self._reactions: list[float] = []
        self._control = Control(s.idle_reprompt_s, s.idle_hangup_s, s.mark_grace_s)

    # ----------------------------------------------------------------- public surface

    @property
    def state(self) -> CallState:
        if self._state in (CallState.CONNECTING, CallState.ENDED):
            return self._state
        reply = self._reply
        if reply is None:
            return CallState.LISTENING
        return CallState.SPEAKING if reply.track.frames_sent else CallState.THINKING

    @property
    def ended(self) -> bool:
        return self._state is CallState.ENDED

    @property
    def started_at(self) -> float | None:
        return self._started_at

    @property
    def snapshot(self) -> CallSnapshot:
        reply = self._reply
        return CallSnapshot(
            state=self.state,
            turn=self._turn,
            live_context=reply.context_id if reply else None,
            contexts_in_use=self._voice.slots_in_use,
            peak_contexts=self._voice.peak_slots,
            contexts_opened=self._voice.opened,
            frames_sent=self._playout.frames_sent,
            dropped_audio_chunks=self._dropped_chunks,
            dropped_audio_bytes=self._dropped_bytes,
            barge_ins=self._barge_ins,
            malformed_messages=self._malformed,
            first_audio_at=self._playout.first_audio_at,
            started_at=self._started_at,
            reaction_times=tuple(self._reactions),
            ended=self._state is CallState.ENDED,
            reply=reply.state if reply else None,
            aec_frames=self._aec.frames, aec_refused=self._aec.refused,
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
                self._playout.mark_played(event.name)
            case Tick():
                self._on_tick(event.at, out)
            case AgentText() | AgentDone() | AgentFailed():
                self._on_agent(event, out)
            case TtsFinal():
                self._context_ended(event.context_id, Input.FINAL, event.at, out)
            case TtsError():
                if event.context_id is not None:  # else socket-level: a close follows, handled as TtsClosed
                    self._context_ended(event.context_id, Input.FAILED, event.at, out)
            case TtsConnected():
                self._voice.connected()
                self._send(event.at, out)
            case TtsClosed():
                self._on_tts_lost(event.at, out)
            case PhoneConnected() if self._connected_at is None:
                self._connected_at = event.at
                out.append(ConnectTts())  # now, not at 'start': the TTS is up when the greeting needs it
            case TurnVerdict():
                self._on_verdict(event, out)  # the judge's answer for a candidate end of turn
            case CallStarted():
                self._on_started(event, out)
            case DtmfReceived():
                self._on_dtmf(event, out)
            case TelephonyMalformed():
                self._malformed += 1
            case CallEnded():
                self._on_ended(event.at, out)
            case AgentControl() | VoicemailDetected() | WindDown():
                self._on_control(event, out)
        if not self.ended:
            self._service(event.at, out)
        if not self.ended and self._reply is None:
            self._control_step(event.at, out)
        return out

    def deadlines(self) -> dict[Timer, float]:
        """Every timer now running, and when it runs out: the one place deadlines come from."""
        return {timer: at for timer, at in zip(_TIMERS, self._deadlines(), strict=True) if at is not None}

    def next_deadline(self) -> float | None:
        """The latest time the shell must send a `Tick` (None: nothing is waiting on time)."""
        return soonest(self._deadlines())

    def _deadlines(self) -> tuple[float | None, ...]:
        """Each `Timer`'s deadline (None: not running), in `Timer` order, from the state it times."""
        if self._state is CallState.ENDED:
            return _NONE
        s, reply = self.settings, self._reply
        connected = self._connected_at
        start = connected + s.start_timeout_s if connected is not None and self._state is CallState.CONNECTING else None
        keepalive, drain, turn_end = (*self._voice.deadlines(), self._eot.deadline())
        control = self._control
        if reply is None:
            return (start, drain, None, None, None, turn_end, keepalive, None, control.idle_deadline(),
                    control.ending_deadline())
        return (
            start,
            drain,
            reply.first_audio_deadline(s.first_audio_timeout_s),
            reply.agent_deadline(s.agent_timeout_s),
            reply.pause_deadline(self._max_pause),
            turn_end,
            keepalive,
            None if reply.paused or reply.held else self._playout.deadline(reply.track, reply.ending),
            None,
            control.ending_deadline(),
        )

    # ----------------------------------------------------------------- phone side

    def _on_started(self, event: CallStarted, out: list[Action]) -> None:
        if self._state is not CallState.CONNECTING:
            self._malformed += 1  # a second ``start``: keep the call as it is
            return
        self._state = CallState.LISTENING
        self._started_at = event.at
        out.extend([ConnectTts()] if self._connected_at is None else [])  # no PhoneConnected came first
        self._greet(event.parameters, event.at, out)  # the greeting (or a voicemail message)

    def _on_caller_audio(self, event: CallerAudio, out: list[Action]) -> None:
        if self._state is CallState.CONNECTING:
            self._malformed += 1  # media before start; the codec normally catches it
            return
        pcm = self._aec.clean(event.pcm, event.at, self._listener.gate)  # our echo out (the raw line heard too)
        self._recorder.remember(pcm)  # the cleaned line: the agent's speech-to-text hears the caller, not us
        candidate = self._eot.candidate  # a pause heard before this audio
        for change in self._listener.feed(event.pcm, event.at, self._aec.line if self._aec.cleaning else None):
            reply = self._reply
            paused = reply is not None and reply.paused
            match change:
                case SpeechStarted() | SpeechResumed() if self._eot.candidate is not None:
                    self._went_on(change.at, out)  # the caller only paused: no end of turn
                case SpeechPaused():
                    self._paused(change, out)
                case SpeechStarted():
                    self._recorder.begin()
                    self._control.caller_active()
                    if reply is not None and not paused and not self._control.firm(reply.turn):
                        reply.pause(change.at)  # soft barge-in: silence the agent now, keep what is unheard
                        self._playout.clear(reply.track, change.at, out)
                case SpeechConfirmed() if reply is not None and paused:
                    self._barge_in(reply, change, out)
                case SpeechDropped() if reply is not None and paused:
                    self._resume(reply)
                case SpeechEnded() if self._eot.candidate is None:  # else the silence heard ends the turn
                    utterance = self._recorder.take()
                    if utterance is not None:  # else the turn-end key already ended this utterance's turn
                        self._start_turn(utterance, event.at, out)
        self._silence_heard(candidate, event.pcm, event.at, out)  # its end counted in audio, not on the clock

    def _resume(self, reply: Reply) -> None:
        """It was a cough, a click, an "mhm" (or nothing settled it in time): the reply goes on
        from where the caller left it."""
        reply.resume()
        self._listener.discard()
        self._recorder.drop()

    def _barge_in(self, reply: Reply, change: SpeechConfirmed, out: list[Action]) -> None:
        """The caller really is talking: the paused reply is over; nothing more of it may play."""
        assert reply.paused_at is not None
        self._barge_ins += 1
        self._reactions.append(reply.paused_at - change.onset)
        self._cut(reply, change.at, out)

    def _cut(self, reply: Reply, at: float, out: list[Action], frames: int | None = None) -> None:
        """End the reply before it played out; the agent hears what the caller heard of it."""
        heard = self._playout.heard_frames(reply.track, at) if frames is None else frames
        self._control.cut(reply.turn)
        self._advance(reply, Input.CUT, at, out)
        out.append(reply.heard(heard, cut=True))


    def _on_agent(self, event: AgentText | AgentDone | AgentFailed, out: list[Action]) -> None:
        reply = self._reply
        if reply is None or reply.turn != event.turn or not reply.writing:
            return  # a turn that is over (cut, timed out) still streaming: ignore it
        match event:
            case AgentText():
                reply.add_text(event.text, event.at)
                self._voice.send(reply, event.at, out)
            case AgentDone():
                self._agent_finished(reply, event.at, out)
            case AgentFailed():  # the caller hears the apology (after what the agent did say), not silence
                self._agent_finished(reply, event.at, out, self.settings.apology.strip())

    def _agent_finished(self, reply: Reply, at: float, out: list[Action], apology: str = "") -> None:
        reply.finish_text(at, apology)
        self._voice.send(reply, at, out)
        voicing = reply.context_id is not None or bool(reply.outbox)
        self._advance(reply, Input.AGENT_DONE if voicing else Input.NOTHING_TO_VOICE, at, out)

    # ----------------------------------------------------------------- TTS side

    def _send(self, at: float, out: list[Action]) -> None:
        if self._reply is not None:
            self._voice.send(self._reply, at, out)

    def _on_tts_audio(self, event: TtsAudio, out: list[Action]) -> None:
        reply = self._reply
        if reply is None or event.context_id != reply.context_id or reply.ending:
            self._dropped_chunks += 1  # a retired, finished or unknown context: never played
            self._dropped_bytes += len(event.pcm)
            return
        reply.track.receive(event.pcm, event.alignment)
        if not reply.voiced:
            self._advance(reply, Input.FIRST_AUDIO, event.at, out)

    def _context_ended(self, context_id: str, happening: Input, at: float, out: list[Action]) -> None:
        """A context is over: ``FINAL`` (its isFinal) or ``FAILED`` (an error for it, or overdue)."""
        self._voice.final(context_id)
        reply = self._reply
        if reply is not None and context_id == reply.context_id and not reply.ending:
            reply.track.end_of_stream()
            self._advance(reply, happening, at, out)
        self._voice.forget_final()
        self._send(at, out)  # a slot may have freed up for a waiting reply

    def _on_tts_lost(self, at: float, out: list[Action]) -> None:
        """The socket is gone: every context with it. Re-voice what the caller has not got."""
        self._voice.lost()
        reply = self._reply
        if reply is None or reply.context_id is None or reply.ending:
            return
        self._advance(reply, Input.LOST if reply.revoice() else Input.LOST_VOICED, at, out)


    def _advance(self, reply: Reply, happening: Input, at: float, out: list[Action]) -> None:
        """Move the reply by the table (``bridge.core.reply``), then do what its new state takes."""
        was_writing, was_draining = reply.writing, reply.draining
        state = reply.move(happening)
        if was_writing and not reply.writing and happening not in (Input.AGENT_DONE, Input.NOTHING_TO_VOICE):
            out.append(CancelTurn(reply.turn))  # over before the agent finished: stop the agent
        if state is ReplyState.CLOSED or reply.salvaging:
            reply.drop_text()
            self._voice.close(reply.context_id, at, out)  # retired: whatever it still sends is dropped
        elif reply.draining and not was_draining:
            # The agent is done and the first audio is here: close now, not before (closing a context
            # the server has not started on can silently drop the whole reply).
            self._voice.close(reply.context_id, at, out)
        if state is ReplyState.CLOSED:
            self._reply = None

    # ----------------------------------------------------------------- time

    def _on_tick(self, at: float, out: list[Action]) -> None:
        deadlines = self._deadlines()
        for i, timer in enumerate(_TIMERS):  # each timer's check sees what the ones before it did
            if is_due(at, deadlines[i]):
                self._expire(timer, at, out)
                deadlines = self._deadlines()

    def _expire(self, timer: Timer, at: float, out: list[Action]) -> None:
        s, reply = self.settings, self._reply
        match timer:
            case Timer.START:
                self._on_ended(at, out)
                out.append(EndCall(f"no 'start' within {s.start_timeout_s:g} s"))
            case Timer.DRAIN:
                for context_id in self._voice.expired(at):
                    self._context_ended(context_id, Input.FAILED, at, out)
            case Timer.FIRST_AUDIO if reply is not None:
                self._advance(reply, Input.FAILED, at, out)  # the TTS never voiced it: free its slot, move on
            case Timer.AGENT if reply is not None:
                out.append(CancelTurn(reply.turn, f"no text for {s.agent_timeout_s:g} s"))
                self._agent_finished(reply, at, out, s.apology.strip())
            case Timer.PAUSE if reply is not None:
                self._resume(reply)  # no caller audio came to settle the pause
            case Timer.TURN_END:
                self._turn_over(at, out)  # the caller's pause was long enough: their turn is over
            case Timer.KEEPALIVE:
                self._voice.keep_alive(at, out)
            case Timer.IDLE | Timer.ENDING:
                self._control_tick(at, out, timer is Timer.IDLE)
            case _:
                pass  # PLAYOUT: the carrier is served after every event

    def _service(self, at: float, out: list[Action]) -> None:
        """After every event: feed the carrier, and notice a reply that has fully played."""
        reply = self._reply
        if reply is None or reply.held:
            return  # nothing plays of a held reply
        if reply.track.queue and not reply.paused:
            self._playout.pump(reply.track, at, out)
        if reply.ending and self._playout.played_out(reply.track, at):
            self._played_out(reply, at, out)

    def _played_out(self, reply: Reply, at: float, out: list[Action]) -> None:
        """The reply's last frame has played: whole, or (salvaged) only as far as its audio went."""
        frames = self._playout.heard_frames(reply.track, at) if reply.salvaging else None
        self._advance(reply, Input.PLAYED_OUT, at, out)
        out.append(reply.heard(frames))
        self._control.played(reply.turn, reply.track, at)

    def _on_ended(self, at: float, out: list[Action]) -> None:
        if self._reply is not None:
            self._advance(self._reply, Input.CUT, at, out)
        self._voice.close_all(at, out)
        self._aec.close()
        self._state = CallState.ENDED
