"""Every deadline of a call comes from the core (``Call.deadlines``), and time alone acts on it.

The shell keeps one timer on ``next_deadline`` and sends a `Tick`; these tests are that shell,
in simulated time: the carrier that never starts the stream, the agent that falls silent, the
moment the TTS is connected, and the audio format every size is derived from.
"""

from __future__ import annotations

import pytest

from bridge.core.actions import CancelTurn, ConnectTts, EndCall, OpenContext, ReplyHeard, SendMedia, SendText, StartTurn
from bridge.core.audio import AudioFormat
from bridge.core.call import Call, CallSettings
from bridge.core.deadlines import Timer
from bridge.core.events import (
    AgentDone,
    AgentText,
    CallerAudio,
    CallStarted,
    PhoneConnected,
    Tick,
    TtsAudio,
    TtsConnected,
    TtsFinal,
)
from tests.support import Driver, silence

APOLOGY = "Sorry, one moment."


# ---------------------------------------------------------------- the carrier's start


def test_a_stream_that_never_starts_is_ended_by_the_core():
    call = Call(CallSettings(start_timeout_s=0.5))
    assert call.handle(PhoneConnected(3.0)) == [ConnectTts()], "the TTS connects at once, ready for the greeting"
    assert call.deadlines() == {Timer.START: 3.5}
    assert call.next_deadline() == 3.5
    assert call.handle(Tick(3.49)) == []
    assert call.handle(Tick(3.5)) == [EndCall("no 'start' within 0.5 s")]
    assert call.ended and call.next_deadline() is None
    assert call.handle(CallStarted(3.6, "MZ1", "CA1")) == [], "too late: the call is over"


def test_start_stops_the_start_timer_and_the_tts_is_already_connecting():
    call = Call()
    assert call.handle(PhoneConnected(0.0)) == [ConnectTts()]
    assert call.handle(CallStarted(0.2, "MZ1", "CA1")) == [StartTurn(0, b"", "")]
    assert Timer.START not in call.deadlines()
    assert EndCall not in {type(a) for a in call.handle(Tick(10.0))}
    assert not call.ended


def test_a_second_start_connects_nothing_again():
    call = Call()
    call.handle(CallStarted(0.0, "MZ1", "CA1"))
    assert call.handle(CallStarted(0.1, "MZ1", "CA1")) == []
    assert call.snapshot.malformed_messages == 1


# ---------------------------------------------------------------- the agent's silence


def test_an_agent_that_never_writes_fails_the_turn_and_the_caller_hears_the_apology():
    d = Driver.started(CallSettings(apology=APOLOGY, agent_timeout_s=4.0))
    assert d.call.deadlines()[Timer.AGENT] == 4.0
    d.advance(3.99)
    assert d.all(CancelTurn) == []
    actions = d.advance(4.0)
    assert actions[0] == CancelTurn(0, "no text for 4 s"), "the shell stops the agent and logs why"
    [open_] = d.all(OpenContext)
    assert d.all(SendText) == [SendText(open_.context_id, APOLOGY + " ", True)]
    assert Timer.AGENT not in d.call.deadlines()
    d.send(AgentText(4.5, 0, "Too late. "))  # the cancelled agent's last words
    assert len(d.all(SendText)) == 1


def test_each_piece_of_text_restarts_the_agents_clock_and_an_empty_one_too():
    d = Driver.started(CallSettings(agent_timeout_s=4.0))
    d.send(AgentText(3.0, 0, "Let me check. "))
    d.send(AgentText(6.0, 0, ""))  # an agent still thinking, saying so
    assert d.call.deadlines()[Timer.AGENT] == 10.0
    d.advance(9.99)
    assert d.all(CancelTurn) == []
    d.advance(10.0)
    assert d.all(CancelTurn) == [CancelTurn(0, "no text for 4 s")]


def test_a_finished_agent_has_no_clock():
    d = Driver.started(CallSettings(agent_timeout_s=4.0))
    d.send(AgentText(1.0, 0, "Hello. "))
    d.send(AgentDone(1.0, 0))
    assert Timer.AGENT not in d.call.deadlines()
    d.advance(30.0)
    assert [a for a in d.all(CancelTurn) if a.reason] == []


# ---------------------------------------------------------------- one place for every deadline


def test_next_deadline_is_the_earliest_running_timer():
    d = Driver.started(CallSettings(agent_timeout_s=4.0))
    d.send(AgentText(0.01, 0, "Hello there. "))
    cid = d.all(OpenContext)[0].context_id
    d.send(TtsAudio(0.3, cid, silence(1.0)))
    deadlines = d.call.deadlines()
    assert set(deadlines) == {Timer.AGENT, Timer.KEEPALIVE, Timer.PLAYOUT}
    assert deadlines[Timer.PLAYOUT] == pytest.approx(0.3 + 0.2 - 0.1), "refill at low_ms"
    assert d.call.next_deadline() == min(deadlines.values())


def test_a_reply_at_its_end_waits_only_for_its_last_frame():
    d = Driver.started()
    d.send(AgentText(0.01, 0, "Hi. "))
    d.send(AgentDone(0.01, 0))
    cid = d.all(OpenContext)[0].context_id
    d.send(TtsAudio(0.3, cid, silence(0.1)))
    d.send(TtsFinal(0.31, cid))
    assert d.call.deadlines() == {Timer.PLAYOUT: pytest.approx(0.4)}
    d.advance(0.4)
    assert d.all(ReplyHeard) == [ReplyHeard(0, "Hi.", interrupted=False)]


# ---------------------------------------------------------------- the audio format


def test_frames_are_sized_and_paced_by_the_audio_format():
    wide = AudioFormat(rate=16000, frame_ms=20)
    call = Call(CallSettings(audio=wide))
    call.handle(CallStarted(0.0, "MZ1", "CA1"))
    call.handle(TtsConnected(0.0))
    [*_, sent] = call.handle(AgentText(0.01, 0, "Hello there. "))
    assert isinstance(sent, SendText)
    actions = call.handle(TtsAudio(0.3, sent.context_id, silence(1.0) * 2))  # 1 s at 16 kHz
    media = [a for a in actions if isinstance(a, SendMedia)]
    assert [len(m.pcm) for m in media] == [5 * wide.pcm_frame_bytes] * 3 and wide.pcm_frame_bytes == 640, (
        "the lead (300 ms) in messages of 100 ms: five 20 ms frames of 640 bytes each")


def test_the_audio_format_refuses_a_frame_of_a_fraction_of_a_sample():
    assert AudioFormat().pcm_frame_bytes == 320 and AudioFormat().frame_s == 0.02
    with pytest.raises(ValueError, match="whole number of samples"):
        AudioFormat(rate=11025, frame_ms=20)


def test_caller_audio_before_start_is_counted_not_heard():
    call = Call()
    call.handle(PhoneConnected(0.0))
    assert call.handle(CallerAudio(0.02, silence(0.02))) == []
    assert call.snapshot.malformed_messages == 1
