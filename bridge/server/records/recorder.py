"""Watches one call from inside its session and keeps its record: never on the audio's way.

The session hands the recorder each event the core handles and each action the core returns,
in order. Per caller frame and per agent frame that is one type check and, with audio recording
on, one list append; everything else happens a few times per turn. Actions carry no time: each
one happened at the ``at`` of the event that caused it. The recorder never raises into the call:
a fault in it is logged once and the call goes on unrecorded from there.

What the recorder hands on (``submit``) is an immutable `CallRecord`: once when the call starts,
after every finished reply, and at the end. The writer keeps only the latest per call.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bridge.core.actions import (
    AbandonTurn,
    Action,
    ClearPlayback,
    EndCall,
    OpenContext,
    ReplyHeard,
    SendMedia,
    SendText,
    StartTurn,
)
from bridge.core.audio import PHONE, AudioFormat
from bridge.core.control import SHUTDOWN
from bridge.core.events import AgentText, CallEnded, CallerAudio, CallStarted, Event, TtsAudio, TtsClosed, TtsConnected
from bridge.server.records.model import BargeIn, CallRecord, Reconnect, Segment, StereoAudio, Turn

if TYPE_CHECKING:
    from bridge.core.call import CallSnapshot

__all__ = ["CallRecorder", "ending"]

log = logging.getLogger("bridge.server.records")



@dataclass(slots=True)
class _Turn:
    turn: int
    at: float
    speech_s: float
    agent_text: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    first_text_at: float | None = None
    first_tts_text_at: float | None = None
    first_tts_audio_at: float | None = None
    first_sent_at: float | None = None
    heard: str | None = None
    interrupted: bool | None = None
    end_of_turn_ms: float | None = None

    def frozen(self) -> Turn:
        def ms(t: float | None, since: float | None) -> float | None:
            return None if t is None or since is None else round((t - since) * 1000, 1)

        return Turn(self.turn, round(self.at, 3), None, "".join(self.agent_text), self.heard, self.interrupted,
                    ",".join(self.contexts), self.end_of_turn_ms, None, ms(self.first_text_at, self.at),
                    ms(self.first_tts_audio_at, self.first_tts_text_at), ms(self.first_sent_at, self.at), None)


def ending(agent_reason: str | None, end_reason: str | None) -> str:
    """How a call ended, in the records' words, from the core's EndCall and the shell's CallEnded."""
    if agent_reason is not None:
        return "transfer" if "transfer" in agent_reason.lower() else "agent ended"
    if end_reason in ("stop", "hangup"):
        return "caller hung up"
    return "drain" if end_reason == "shutdown" else "error"


class CallRecorder:
    """One call's record keeper; ``event``/``action``/``end`` are the session's observer hooks."""

    def __init__(self, submit: Callable[[CallRecord], None], snapshot: Callable[[], CallSnapshot], *,
                 carrier: str = "twilio", end_of_turn_ms: float = 600.0, preroll_ms: float = 300.0,
                 audio: bool = False, audio_format: AudioFormat = PHONE) -> None:
        self._submit = submit
        self._snapshot = snapshot
        self._carrier = carrier
        self._end_of_turn_ms = end_of_turn_ms
        self._preroll_s = preroll_ms / 1000
        self._rate = rate = audio_format.rate
        self._frame = audio_format  # the carrier's packet: a clear lets the one in flight finish
        self._audio = StereoAudio(rate=rate) if audio else None
        self._base: CallRecord | None = None
        self._t0 = 0.0
        self._now = 0.0
        self._turns: dict[int, _Turn] = {}
        self._context_turn: dict[str, int] = {}
        self._context: str | None = None
        self._segments: list[Segment] = []
        self._agent_span: list[float] | None = None  # [start, end] of the agent audio now being played
        self._play_end = 0.0
        self._last_clear: float | None = None
        self._barge_ins: list[BargeIn] = []
        self._reconnects: list[Reconnect] = []
        self._connects = 0
        self._lost: tuple[float, str] | None = None
        self._agent_ended: str | None = None
        self._end_reason: str | None = None
        self._broken = False

    # ----------------------------------------------------------------- hooks

    def event(self, event: Event) -> None:
        self._now = event.at - self._t0  # the time of every action this event causes
        if self._broken:  # only how the call ends is still noted
            if type(event) is CallEnded:
                self._end_reason = self._end_reason or event.reason
            return
        if type(event) is CallerAudio:  # 50 a second: nothing but the recording's append
            if self._audio is not None and self._base is not None:
                self._audio.caller.append(event.pcm)
            return
        try:
            self._on_event(event)
        except Exception:
            self._fail()

    def action(self, action: Action) -> None:
        if self._base is None:
            return
        if self._broken:
            if type(action) is EndCall:
                self._bridge_ended(action)
            return
        try:
            if type(action) is SendMedia:  # 50 a second while the agent speaks
                self._on_media(action)
            else:
                self._on_action(action)
        except Exception:
            self._fail()

    def _bridge_ended(self, action: EndCall) -> None:
        """The bridge closed the stream: at a drain's deadline (the server's doing), else for the agent."""
        if action.reason == SHUTDOWN:
            self._end_reason = "shutdown"
        else:
            self._agent_ended = action.reason or "ended by the agent"

    def end(self, snapshot: CallSnapshot) -> None:
        """The call is over: close the last spans and submit the final record."""
        if self._base is None:
            return
        if self._broken:  # at least say how the call ended
            with contextlib.suppress(Exception):
                self._submit(replace(self._base, ended_at=self._base.started_at + timedelta(seconds=self._now),
                                     ended_how=ending(self._agent_ended, self._end_reason),
                                     end_detail="the record is incomplete: recording this call failed",
                                     aec_refused=snapshot.aec_refused))
            return
        try:
            self._close_agent_span(self._now)
            how = ending(self._agent_ended, self._end_reason)
            detail = self._agent_ended or self._end_reason or "the session ended without a hang-up"
            ended_at = self._base.started_at + timedelta(seconds=max(self._now, 0.0))
            self._push(ended_at=ended_at, ended_how=how, end_detail=detail[:200], audio=self._audio,
                       aec_refused=snapshot.aec_refused)
        except Exception:
            self._fail()

    # ----------------------------------------------------------------- events

    def _on_event(self, event: Event) -> None:
        match event:
            case CallStarted() if self._base is None:
                self._start(event)
            case AgentText():
                turn = self._turns.get(event.turn)
                if turn is not None:
                    turn.agent_text.append(event.text)
                    turn.first_text_at = turn.first_text_at if turn.first_text_at is not None else self._now
            case TtsAudio():
                turn = self._turns.get(self._context_turn.get(event.context_id, -1))
                if turn is not None and turn.first_tts_audio_at is None:
                    turn.first_tts_audio_at = self._now
            case TtsConnected():
                self._connects += 1
                if self._connects > 1:
                    lost_s, why = self._lost if self._lost is not None else (None, "")
                    self._reconnects.append(Reconnect(len(self._reconnects), lost_s, round(self._now, 3), why))
                self._lost = None
            case TtsClosed(expected=False) if self._lost is None:
                self._lost = (round(self._now, 3), f"{event.code or ''} {event.reason}".strip()[:200])
            case CallEnded():
                self._end_reason = self._end_reason or event.reason
            case _:
                pass

    def _start(self, event: CallStarted) -> None:
        self._t0 = event.at
        self._now = 0.0
        params = event.parameters
        started = datetime.now(UTC)  # the event was handled moments after it arrived
        self._base = CallRecord(event.call_id or event.stream_id, event.stream_id, self._carrier,
                                params.get("from") or None, params.get("to") or None, started)
        self._submit(self._base)

    # ----------------------------------------------------------------- actions

    def _on_media(self, action: SendMedia) -> None:
        now = self._now
        start = now if now > self._play_end else self._play_end
        span = self._agent_span
        if span is None or span[1] < start - 1e-6:
            self._close_agent_span(now)
            span = self._agent_span = [start, start]
        span[1] = self._play_end = start + len(action.pcm) / (2 * self._rate)  # a message holds one or more frames
        if self._audio is not None:
            self._audio.agent.append((start, action.pcm))
        if self._context is not None:
            turn = self._turns.get(self._context_turn.get(self._context, -1))
            if turn is not None and turn.first_sent_at is None:
                turn.first_sent_at = now

    def _on_action(self, action: Action) -> None:
        now = self._now
        match action:
            case StartTurn():
                self._start_turn(action)
            case AbandonTurn():
                self._abandon(action.turn)
            case OpenContext():
                self._close_agent_span(now)
                self._context = action.context_id
                latest = max(self._turns, default=None)
                if latest is not None:
                    self._context_turn[action.context_id] = latest
                    self._turns[latest].contexts.append(action.context_id)
            case SendText() if action.text.strip():
                turn = self._turns.get(self._context_turn.get(action.context_id, -1))
                if turn is not None and turn.first_tts_text_at is None:
                    turn.first_tts_text_at = now
            case ClearPlayback():
                self._clear(now)
            case ReplyHeard():
                self._heard(action)
            case EndCall():
                self._bridge_ended(action)
            case _:
                pass

    def _start_turn(self, action: StartTurn) -> None:
        now = self._now
        speech_s = len(action.utterance) / (2 * self._rate)  # 16-bit at the call's rate
        turn = _Turn(action.turn, now, speech_s)
        if speech_s > 0:
            # The utterance runs from a pre-roll before the speech onset to this turn's start, the
            # last ``end_of_turn_ms`` of it being the silence that ended the turn.
            silence = self._end_of_turn_ms / 1000
            start, end = max(0.0, now - speech_s + self._preroll_s), max(0.0, now - silence)
            if end > start:
                self._segments.append(Segment(len(self._segments), "caller", round(start, 3), round(end, 3),
                                              None, action.turn))
            turn.end_of_turn_ms = self._end_of_turn_ms
        self._turns[action.turn] = turn

    def _abandon(self, number: int) -> None:
        """A guess at a pause the caller talked through was never heard: it is no turn of the call, and
        its words come again, whole, with the turn that answers them."""
        self._turns.pop(number, None)
        kept = [s for s in self._segments if s.turn != number]
        self._segments = [replace(s, seq=i) for i, s in enumerate(kept)]

    def _clear(self, now: float) -> None:
        self._close_agent_span(now)
        self._play_end = now
        self._last_clear = now
        self._segments.append(Segment(len(self._segments), "clear", round(now, 3), round(now, 3), self._context))
        if self._audio is not None:  # frames the carrier had not started are never heard
            agent = self._audio.agent
            while agent and agent[-1][0] >= now - 1e-6:
                agent.pop()
            if agent:  # a message of several frames: the frame in flight finishes, the rest is dropped
                start, pcm = agent[-1]
                frames = math.ceil((now - start) / self._frame.frame_s - 1e-6)
                agent[-1] = (start, pcm[: frames * self._frame.frame_samples * 2])

    def _heard(self, action: ReplyHeard) -> None:
        turn = self._turns.get(action.turn)
        if turn is not None:
            turn.heard, turn.interrupted = action.text, action.interrupted
        if action.interrupted:
            snap = self._snapshot()
            if snap.barge_ins > len(self._barge_ins) and snap.reaction_times:
                reaction = snap.reaction_times[-1]
                clear = self._last_clear
                paused = clear if clear is not None else self._now
                self._barge_ins.append(BargeIn(len(self._barge_ins), action.turn, round(paused - reaction, 3),
                                               None if clear is None else round(clear, 3), round(reaction * 1000, 1)))
            self._last_clear = None
        self._push()

    def _close_agent_span(self, now: float) -> None:
        span, self._agent_span = self._agent_span, None
        if span is None:
            return
        end = min(span[1], max(now, span[0])) if now < span[1] else span[1]
        if end > span[0]:
            turn = self._context_turn.get(self._context or "")
            self._segments.append(Segment(len(self._segments), "agent", round(span[0], 3), round(end, 3),
                                          self._context, turn))

    # ----------------------------------------------------------------- hand-off

    def _push(self, **changes: object) -> None:
        assert self._base is not None
        record = replace(
            self._base,
            turns=tuple(t.frozen() for t in sorted(self._turns.values(), key=lambda t: t.turn)),
            barge_ins=tuple(self._barge_ins), reconnects=tuple(self._reconnects),
            segments=tuple(sorted(self._segments, key=lambda s: (s.start_s, s.seq))),
            **changes,  # type: ignore[arg-type]
        )
        self._submit(record)

    def _fail(self) -> None:
        self._broken = True
        log.exception("call records: recording this call failed; the call goes on unrecorded")
