"""The call's decisions about itself, in simulated time: hang-up, transfer, idle caller, voicemail, drain."""

from __future__ import annotations

from bridge.core.actions import (
    CancelTurn,
    CloseContext,
    EndCall,
    OpenContext,
    ReplyHeard,
    SendMark,
    SendMedia,
    SendText,
    StartTurn,
)
from bridge.core.call import Call, CallSettings
from bridge.core.events import (
    AgentControl,
    AgentDone,
    AgentText,
    Alignment,
    CallStarted,
    MarkPlayed,
    TtsAudio,
    TtsConnected,
    TtsFinal,
    VoicemailDetected,
    WindDown,
)
from tests.support import Driver, load_wav, tone

SPEECH = load_wav("caller_02.wav")


def voice(d: Driver, at: float, seconds: float = 1.0) -> float:
    """The TTS voices the newest context: ``seconds`` of audio, then its isFinal. Returns when it plays out."""
    context = d.all(OpenContext)[-1].context_id
    d.send(TtsAudio(at, context, tone(440, seconds)))
    d.send(TtsFinal(at + 0.01, context))
    return at + seconds


def say(d: Driver, turn: int, text: str, at: float, control: AgentControl | None = None) -> float:
    d.send(AgentText(at, turn, text))
    if control is not None:
        d.send(control)
    d.send(AgentDone(at, turn))
    return voice(d, at + 0.05)


def last_said(d: Driver) -> str:
    """All the text sent to the newest context."""
    context = d.all(OpenContext)[-1].context_id
    return "".join(t.text for t in d.all(SendText) if t.context_id == context).strip()


def end_calls(d: Driver) -> list[tuple[float, EndCall]]:
    return [(at, a) for at, a in d.log if isinstance(a, EndCall)]


def last_media_at(d: Driver) -> float:
    return max(at for at, a in d.log if isinstance(a, SendMedia))


def test_a_goodbye_plays_to_its_end_then_the_bridge_hangs_up():
    d = Driver.started()
    played = say(d, 0, "Thanks for calling. Goodbye!", 0.01, AgentControl(0.01, 0, "hangup"))
    d.advance(played + 0.5)
    assert end_calls(d) == []  # still playing (the mark has not come back, the grace has not run out)
    d.advance(played + 3.0)
    [(at, end)] = end_calls(d)
    assert end.outcome == "hangup"
    assert last_media_at(d) < at <= played + 0.3 + 1.0  # after the last frame; the mark's grace is bounded
    assert d.call.ended


def test_the_last_mark_ends_the_call_before_the_grace_runs_out():
    d = Driver.started()
    played = say(d, 0, "Goodbye!", 0.01, AgentControl(0.01, 0, "hangup"))
    d.advance(played + 0.2)
    last_mark = d.all(SendMark)[-1].name
    d.send(MarkPlayed(played + 0.25, last_mark))
    [(at, _)] = end_calls(d)
    assert at == played + 0.25


def test_a_transfer_ends_the_stream_with_its_number():
    d = Driver.started()
    played = say(d, 0, "Connecting you now.", 0.01, AgentControl(0.01, 0, "transfer", "+15551234567"))
    d.advance(played + 2.0)
    [(_, end)] = end_calls(d)
    assert (end.outcome, end.to) == ("transfer", "+15551234567")


def test_a_barge_in_during_the_goodbye_calls_off_the_hang_up():
    d = Driver.started()
    say(d, 0, "Is there anything else? Otherwise goodbye, have a lovely day and take care!", 0.01,
        AgentControl(0.01, 0, "hangup"))
    d.caller(SPEECH, 0.5)
    d.advance(d.now + 3.0)
    assert end_calls(d) == []
    assert len(d.answered()) == 2  # the caller's words get an answer


def test_a_control_for_a_turn_that_is_over_is_ignored():
    d = Driver.started()
    played = say(d, 0, "Hello.", 0.01)
    d.send(AgentControl(played + 0.1, 0, "hangup"))
    d.advance(played + 5)
    assert end_calls(d) == []


IDLE = CallSettings(idle_reprompt_s=5.0, idle_hangup_s=12.0, goodbye="Bye for now.")


def test_a_silent_caller_is_prompted_then_told_goodbye_and_hung_up_on():
    d = Driver.started(IDLE)
    played = say(d, 0, "Hello, how can I help?", 0.01)
    d.advance(played + 4.9)
    assert [t.idle for t in d.all(StartTurn)] == [False]
    d.advance(played + 5.2)
    idle_turn = d.all(StartTurn)[-1]
    assert idle_turn.idle and idle_turn.utterance == b""
    at = d.now
    prompted = say(d, idle_turn.turn, "Are you still there?", at)
    d.advance(prompted + 11.5)
    assert end_calls(d) == []
    d.advance(prompted + 12.5)
    assert last_said(d) == "Bye for now."  # the bridge's own goodbye, no agent turn
    assert len(d.all(StartTurn)) == 2
    gone = voice(d, d.now)
    d.advance(gone + 2.0)
    [(_, end)] = end_calls(d)
    assert end.outcome == "hangup" and "silent" in end.reason


def test_caller_speech_restarts_the_idle_clocks():
    d = Driver.started(IDLE)
    played = say(d, 0, "Hello.", 0.01)
    d.caller(SPEECH, played + 3.0)
    d.advance(d.now + 1.5)  # the caller's end of speech
    turns = d.answered()
    assert len(turns) == 2 and not turns[-1].idle  # the caller spoke, no reprompt
    answered = say(d, turns[-1].turn, "Sure.", d.now + 0.1)
    d.advance(answered + 4.5)
    assert len(d.answered()) == 2
    d.advance(answered + 5.5)
    assert d.all(StartTurn)[-1].idle


def test_idle_handling_is_off_by_default():
    d = Driver.started()
    played = say(d, 0, "Hello.", 0.01)
    d.advance(played + 120)
    assert len(d.all(StartTurn)) == 1 and end_calls(d) == []


VOICEMAIL = CallSettings(voicemail_message="Please call us back.")


def test_a_machine_gets_the_voicemail_message_once_then_a_hang_up():
    call = Call(VOICEMAIL)
    d = Driver(call)
    d.send(CallStarted(0.0, "MZ1", "CA1", {"mode": "voicemail"}))
    d.line_at = 0.0
    d.send(TtsConnected(0.0))
    assert d.all(StartTurn) == []  # not the agent's greeting
    assert "".join(t.text for t in d.all(SendText)).strip() == "Please call us back."
    played = voice(d, 0.1, 1.5)
    d.caller(SPEECH, 0.3)  # the machine's own noise neither pauses nor cuts the message
    d.advance(played + 2.0)
    [(at, end)] = end_calls(d)
    assert at >= played and end.outcome == "hangup"
    assert d.all(StartTurn) == []


def test_a_late_machine_verdict_switches_a_live_call_to_voicemail():
    d = Driver.started(VOICEMAIL)
    d.send(AgentText(0.01, 0, "Hello, this is the clinic calling about your appointment."))
    d.send(AgentDone(0.01, 0))
    voice(d, 0.05, 3.0)
    d.send(VoicemailDetected(1.0))
    assert d.all(CancelTurn) == [] or d.all(CancelTurn)[-1].turn == 0
    assert last_said(d) == "Please call us back."
    played = voice(d, 1.1, 1.0)
    d.advance(played + 2.0)
    [(_, end)] = end_calls(d)
    assert end.reason == "voicemail left"


WORDS = "one two three four five six seven eight "  # 40 characters, voiced 100 ms each


def test_the_drain_cuts_the_reply_at_a_word_end_then_says_goodbye_then_ends():
    d = Driver.started()
    d.send(AgentText(0.01, 0, "One two three four five six seven eight. And then there is more to say"))
    context = d.all(OpenContext)[-1].context_id
    alignment = Alignment(WORDS, tuple(100 * i for i in range(len(WORDS))))
    d.send(TtsAudio(0.05, context, tone(440, 4.0), alignment))
    d.send(WindDown(1.0, "We have to end the call now. Goodbye.", end_by=8.0))
    assert CancelTurn(0) in d.all(CancelTurn)  # no more from the agent
    assert CloseContext(context) in d.all(CloseContext)
    d.advance(1.4)
    assert last_said(d) == "We have to end the call now. Goodbye."  # once the word in the ear has ended
    [heard] = [a for a in d.all(ReplyHeard) if a.turn == 0]
    assert heard.text == "one two three" and heard.interrupted
    # "one two three" ends 1.3 s into the audio: 65 frames of 20 ms, and the space's; "four" never starts
    assert len(d.frames()) == 66
    gone = voice(d, 1.45, 2.0)
    d.advance(9.0)
    [(at, end)] = end_calls(d)
    assert gone <= at <= 8.0 and end.reason == "server shutting down"


def test_the_drain_ends_the_call_at_its_deadline_whatever_is_playing():
    d = Driver.started()
    d.send(WindDown(0.5, "Goodbye.", end_by=2.0))
    voice(d, 0.6, 10.0)
    d.advance(5.0)
    [(at, _)] = end_calls(d)
    assert at == 2.0


def test_a_goodbye_longer_than_the_time_left_stops_on_a_word_end_by_the_deadline():
    d = Driver.started()
    d.send(AgentDone(0.01, 0))  # the greeting was empty: nothing plays
    d.send(WindDown(0.5, WORDS.strip(), end_by=1.5))
    context = d.all(OpenContext)[-1].context_id
    alignment = Alignment(WORDS, tuple(100 * i for i in range(len(WORDS))))
    d.send(TtsAudio(0.55, context, tone(440, 4.0), alignment))
    d.advance(3.0)
    [(at, _)] = end_calls(d)
    assert at <= 1.5
    frames = len(d.frames())
    last_char = (frames - 1) * 20 // 100  # the last character whose audio began
    assert last_char < len(WORDS) - 1 and WORDS[last_char] == " "  # the call ended on a word's end
