"""What the recorder makes of a call: the real core in simulated time, watched as the session
lets the records watch it (every event in, every action out, then the end)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.actions import Action, ClearPlayback, EndCall, OpenContext, StartTurn
from bridge.core.aec import AecConfig
from bridge.core.budget import AecBudget
from bridge.core.call import Call, CallSettings
from bridge.core.events import (
    AgentDone,
    AgentText,
    CallEnded,
    CallStarted,
    Event,
    TtsAudio,
    TtsClosed,
    TtsConnected,
    TtsFinal,
)
from bridge.server.records.model import CallRecord, mask_number
from bridge.server.records.recorder import CallRecorder, ending
from tests.support import Driver, load_wav, tone
from tests.turntaking import Line, echo_only


@dataclass
class Watched(Driver):
    recorder: CallRecorder | None = None

    def _handle(self, event: Event) -> list[Action]:
        assert self.recorder is not None
        self.recorder.event(event)
        actions = super()._handle(event)
        for action in actions:
            self.recorder.action(action)
        return actions


def watched_call(audio: bool = False) -> tuple[Watched, list[CallRecord]]:
    submitted: list[CallRecord] = []
    d = Watched(Call())
    d.recorder = CallRecorder(submitted.append, lambda: d.call.snapshot, audio=audio)
    d.send(CallStarted(0.0, "MZ1", "CA1", {"from": "+15551234567", "to": "+15557654321"}))
    d.line_at = 0.0
    d.send(TtsConnected(0.0))
    return d, submitted


def contexts(d: Driver) -> list[str]:
    return [a.context_id for a in d.all(OpenContext)]


def test_a_barged_in_greeting_and_an_answered_turn() -> None:
    d, submitted = watched_call()
    assert submitted[0].call_id == "CA1" and submitted[0].from_number == "+15551234567"
    d.send(AgentText(0.05, 0, "Hello and welcome. I can tell you about our opening hours and much more. "))
    d.send(AgentDone(0.06, 0))
    d.send(TtsAudio(0.15, contexts(d)[0], tone(440, 4.0)))
    d.caller(load_wav("caller_02.wav"), start=1.5)  # speaks over the greeting, then stops
    d.advance(d.now + 1.0)
    *_, answered = d.answered()  # a guess at a pause in the caller's words, if any, was abandoned
    assert len(contexts(d)) == 1 and answered.turn >= 1, "the caller's speech started a turn"
    [turn1_at] = [at for at, a in d.log if isinstance(a, StartTurn) and a.turn == answered.turn]
    text_at = d.now + 0.25
    d.send(AgentText(text_at, answered.turn, "Sure. "))
    d.send(AgentDone(d.now + 0.01, answered.turn))
    d.send(TtsAudio(d.now + 0.1, contexts(d)[1], tone(660, 1.0)))
    d.send(TtsFinal(d.now + 0.05, contexts(d)[1]))
    d.advance(d.now + 2.0)
    d.send(CallEnded(d.now, "stop"))
    assert d.recorder is not None
    d.recorder.end(d.call.snapshot)
    rec = submitted[-1]

    assert rec.ended_how == "caller hung up" and rec.duration_s is not None and rec.duration_s > 4
    greeting, reply = rec.turns
    assert greeting.interrupted is True and greeting.heard_text and len(greeting.heard_text) < len(greeting.agent_text)
    assert reply.interrupted is False and reply.heard_text == "Sure." and reply.agent_text == "Sure. "
    assert greeting.first_audio_sent_ms is not None and 140 <= greeting.first_audio_sent_ms <= 160
    assert reply.llm_first_token_ms == round((text_at - turn1_at) * 1000, 1)
    assert reply.tts_first_audio_ms is not None and reply.first_audio_sent_ms is not None
    assert reply.end_of_turn_ms == 600.0 and greeting.end_of_turn_ms is None
    [barge] = rec.barge_ins
    assert barge.reaction_ms == round(d.call.snapshot.reaction_times[0] * 1000, 1)
    [clear_at] = [s.start_s for s in rec.segments if s.kind == "clear"]
    assert barge.clear_s == clear_at and 1.5 <= barge.onset_s < clear_at
    agent = [s for s in rec.segments if s.kind == "agent"]
    assert [s.context_id for s in agent] == contexts(d)
    assert agent[0].end_s == clear_at, "the greeting's audio stops where playback was cleared"
    [caller] = [s for s in rec.segments if s.kind == "caller"]
    assert caller.start_s <= barge.onset_s + 0.1 and caller.end_s <= reply.at_s
    assert rec.median_reply_ms == reply.first_audio_sent_ms
    assert len(submitted) >= 3, "submitted at the start, after each reply, and at the end"


class _Observed:
    """A call whose events and actions the recorder sees, as the session shows them to it."""

    def __init__(self, call: Call, recorder: CallRecorder) -> None:
        self._call, self._recorder = call, recorder

    def handle(self, event: Event) -> list[Action]:
        self._recorder.event(event)
        actions = self._call.handle(event)
        for action in actions:
            self._recorder.action(action)
        return actions

    def __getattr__(self, name: str) -> object:
        return getattr(self._call, name)


def test_a_speakerphone_call_on_a_worker_with_no_canceller_free_is_recorded_as_refused_for_the_budget() -> None:
    """Its worker runs no canceller (``aec.max_engaged = 0``): the call's record says why the echo
    the probe found was left to the echo guard alone."""
    line = Line(echo_only(-10.0, 120.0), CallSettings(aec=AecConfig(mode="auto"), aec_budget=AecBudget(0)))
    call = line.call
    submitted: list[CallRecord] = []
    recorder = CallRecorder(submitted.append, lambda: call.snapshot)
    line.call = _Observed(call, recorder)  # type: ignore[assignment]
    line.run()
    line.handle(CallEnded(14.0, "stop"))
    recorder.end(call.snapshot)
    assert submitted[-1].ended_how == "caller hung up" and submitted[-1].aec_refused == "budget"
    assert submitted[0].aec_refused == "", "not yet known when the call starts"


def test_a_tts_reconnect_is_recorded_with_its_downtime() -> None:
    d, submitted = watched_call()
    d.send(TtsClosed(1.0, 1011, "server error"))
    d.send(TtsConnected(1.4))
    d.send(CallEnded(2.0, "hangup"))
    assert d.recorder is not None
    d.recorder.end(d.call.snapshot)
    [reconnect] = submitted[-1].reconnects
    assert reconnect.lost_s == 1.0 and reconnect.connected_s == 1.4 and reconnect.reason == "1011 server error"
    assert reconnect.downtime_ms is not None and round(reconnect.downtime_ms) == 400


def test_recording_keeps_the_agent_as_heard_without_what_a_clear_dropped() -> None:
    d, submitted = watched_call(audio=True)
    d.send(AgentText(0.05, 0, "Hello and welcome. I can tell you about our opening hours and much more. "))
    d.send(TtsAudio(0.15, contexts(d)[0], tone(440, 4.0)))
    d.caller(load_wav("caller_02.wav"), start=1.0)
    d.send(CallEnded(d.now + 0.5, "stop"))
    assert d.recorder is not None
    d.recorder.end(d.call.snapshot)
    rec = submitted[-1]
    assert rec.audio is not None
    [clear_at] = [s.start_s for s in rec.segments if s.kind == "clear"]
    assert rec.audio.agent and max(at for at, _ in rec.audio.agent) < clear_at
    assert len(b"".join(rec.audio.caller)) >= len(load_wav("caller_02.wav"))
    assert submitted[0].audio is None, "audio only travels with the final record"


def test_how_a_call_ended() -> None:
    assert ending(None, "stop") == ending(None, "hangup") == "caller hung up"
    assert ending("goodbye", "stop") == "agent ended"
    assert ending("transfer to +1555", None) == "transfer"
    assert ending(None, "shutdown") == "drain"
    assert ending(None, "dropped") == ending(None, None) == ending(None, "no start") == "error"


def test_a_recorder_fault_never_reaches_the_call_and_the_end_is_still_recorded() -> None:
    submitted: list[CallRecord] = []

    def flaky(record: CallRecord) -> None:
        submitted.append(record)
        if len(submitted) == 1:
            raise RuntimeError("boom")

    call = Call()
    recorder = CallRecorder(flaky, lambda: call.snapshot)
    recorder.event(CallStarted(0.0, "MZ1", "CA1"))  # submit raises inside: swallowed, logged
    recorder.action(ClearPlayback())
    recorder.action(EndCall("bye"))
    recorder.event(CallEnded(3.0, "stop"))
    recorder.end(call.snapshot)
    assert submitted[-1].ended_how == "agent ended" and submitted[-1].duration_s == 3.0
    assert "incomplete" in submitted[-1].end_detail


def test_lists_mask_numbers() -> None:
    assert mask_number("+15551234567") == "+1••••••4567"
    assert mask_number("1234") == "••••" and mask_number(None) is None and mask_number("") == ""


def test_a_16_khz_call_is_recorded_at_16_khz(tmp_path) -> None:
    import wave

    import numpy as np

    from bridge.server.records.model import StereoAudio
    from bridge.server.records.wav import write_stereo_wav

    frame = (np.sin(2 * np.pi * 5000 * np.arange(320) / 16000) * 8000).astype("<i2").tobytes()  # 20 ms
    audio = StereoAudio(caller=[b"\x01\x00" * 16000], agent=[(0.5, frame)], rate=16000)
    write_stereo_wav(tmp_path / "call.wav", audio)
    with wave.open(str(tmp_path / "call.wav")) as w:
        assert w.getframerate() == 16000 and w.getnframes() == 16000
        stereo = np.frombuffer(w.readframes(16000), "<i2").reshape(-1, 2)
    assert stereo[8000:8320, 1].tobytes() == frame, "the agent's frame at 0.5 s, as played"
    assert not stereo[:8000, 1].any() and not stereo[8320:, 1].any()
